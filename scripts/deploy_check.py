#!/usr/bin/env python3
"""The checks of scripts/deploy-check that talk to the programs it runs
(run with the venv's Python, where websocket-client and PyYAML are
installed; scripts/deploy-check does that). Every address is on loopback.

  failover    subscribers through a proxy, a numbered publisher, a node
              drained (SIGTERM) and a node killed (SIGKILL): every
              subscriber must end with messages 1..N exactly once, in order,
              having resumed (since_seq + epoch) after each reconnect.
  dashboard   every metric (and label value) that deploy/grafana-dashboard.json
              queries is one a running broker's /metrics exports.
  prometheus  a real Prometheus scrapes the nodes: the targets are up, a
              query for a pubsub metric returns a value for each, the alert
              rules are loaded and evaluate without error; or, with
              --expect-alert, that alert becomes pending or firing.
  compose     deploy/compose.yaml names the services, files, ports and
              settings that the tested files use.
  settings    the files agree with deploy/pubsub.env: every setting in it
              is one the broker knows (`pubsub --help`, including the
              commented ones), the proxies' WebSocket timeouts are above
              HEARTBEAT_INTERVAL_SECS, the unit's TimeoutStopSec and the
              PubSubDown alert's `for` above SHUTDOWN_TIMEOUT_SECS, the
              connections alert's limit is MAX_CONNECTIONS.
  syscalls    every system call in an strace log of the broker is one that
              the unit's SystemCallFilter allows (groups expanded by
              `systemd-analyze syscall-filter`), and none makes memory
              writable and executable (MemoryDenyWriteExecute).

Exit status 0 when the check passes, 1 with the reasons when it does not.
"""
import argparse
import http.client
import json
import os
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

NODE_HEADER = "X-PubSub-Node"


def fail(reasons):
    for reason in reasons:
        print(f"  FAILED: {reason}")
    sys.exit(1)


def http_get(url, timeout=5, headers=None):
    """(status, body) of a GET; (None, error text) if it got no answer."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (OSError, http.client.HTTPException) as e:
        return None, str(e)


# ---------------------------------------------------------------- failover


def node_name(args, header):
    """The node that served a request, from the proxy's X-PubSub-Node:
    HAProxy's server name, or nginx's upstream address (the last one tried),
    named by --pids."""
    if not header:
        return "?"
    served = header.split(",")[-1].strip()
    return args.addresses.get(served, served)


class Subscriber(threading.Thread):
    """One client through the proxy: subscribes, reads, and after every
    disconnect connects again through the proxy and resumes from the last
    `seq` it saw, in its first ack's epoch."""

    def __init__(self, index, args, deadline):
        super().__init__(daemon=True)
        self.index = index
        self.args = args
        self.deadline = deadline
        self.subscribed = threading.Event()
        self.epoch = None
        self.last_seq = 0
        self.seqs = []  # the seq of every event, as it arrived
        self.numbers = []  # the publisher's number of every event, as it arrived
        self.connections = []  # (monotonic time, node) per connection made
        self.resumes = []  # (since_seq, recovered) per resume
        self.shutdown_notices = 0
        self.errors = []

    def connect(self):
        import websocket

        give_up = min(self.deadline, time.monotonic() + 20)
        delay = 0.05
        while True:
            try:
                ws = websocket.create_connection(f"ws://{self.args.proxy}/ws", timeout=5)
                headers = {k.lower(): v for k, v in (ws.getheaders() or {}).items()}
                self.connections.append((time.monotonic(), node_name(self.args, headers.get(NODE_HEADER.lower()))))
                return ws
            except Exception as e:  # refused, reset, a 502/503 from the proxy: try again
                if time.monotonic() > give_up:
                    raise RuntimeError(f"no connection through the proxy within 20 s: {e}")
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def subscribe(self, ws, resume):
        frame = {"type": "subscribe", "topic": self.args.topic, "client_id": f"deploy-check-{self.index}",
                 "request_id": "sub"}
        if resume:
            frame.update(since_seq=self.last_seq, epoch=self.epoch)
        ws.send(json.dumps(frame))
        while True:
            reply = json.loads(ws.recv())
            if reply.get("type") == "info" and reply.get("msg") == "ping":
                continue
            if reply.get("type") != "ack" or reply.get("request_id") != "sub":
                raise RuntimeError(f"subscribe answered with {reply}")
            return reply

    def run(self):
        try:
            self.loop()
        except Exception as e:
            self.errors.append(f"subscriber {self.index}: {e}")
        finally:
            self.subscribed.set()

    def loop(self):
        import websocket

        ws = self.connect()
        ack = self.subscribe(ws, resume=False)
        self.epoch, self.last_seq = ack["epoch"], ack["last_seq"]
        self.subscribed.set()
        while len(self.numbers) < self.args.messages and time.monotonic() < self.deadline:
            try:
                text = ws.recv()
                if not text:  # a close frame
                    raise websocket.WebSocketConnectionClosedException("closed by the server")
            except websocket.WebSocketTimeoutException:
                continue
            except Exception:
                ws.close()
                ws = self.connect()
                ack = self.subscribe(ws, resume=True)
                self.resumes.append((self.last_seq, ack.get("recovered")))
                if ack.get("recovered") is not True:
                    raise RuntimeError(f"resume from seq {self.last_seq} not recovered: {ack}")
                continue
            frame = json.loads(text)
            kind = frame.get("type")
            if kind == "event" and frame.get("topic") == self.args.topic:
                self.seqs.append(frame["seq"])
                self.numbers.append(frame["message"]["payload"]["n"])
                self.last_seq = frame["seq"]
            elif kind == "info" and frame.get("msg") == "server_shutdown":
                self.shutdown_notices += 1
            elif kind == "info" and frame.get("msg") == "ping":
                pass
            else:
                raise RuntimeError(f"unexpected frame {frame}")
        ws.close()


class Publisher:
    """Publishes 1..N over REST through the proxy, each exactly once: a
    refusal that says nothing was published (503 SHUTTING_DOWN, a refused
    connection) is sent again; an answer that never came is looked up in
    the topic's history before anything is sent again."""

    def __init__(self, args):
        self.args = args
        self.conn = None
        self.seqs = {}  # number -> seq
        self.nodes = {}  # node -> publishes it acked
        self.retries = 0
        self.lookups = 0

    def request(self, method, path, body=None):
        if self.conn is None:
            host, port = self.args.proxy.rsplit(":", 1)
            self.conn = http.client.HTTPConnection(host, int(port), timeout=5)
        headers = {"Content-Type": "application/json"}
        try:
            self.conn.request(method, path, body=body, headers=headers)
            reply = self.conn.getresponse()
            data = reply.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            raise
        if reply.getheader("Connection", "").lower() == "close":
            self.conn.close()
            self.conn = None
        return reply.status, data, node_name(self.args, reply.getheader(NODE_HEADER))

    def published_as(self, n):
        """The seq of message n if the topic holds it, else None."""
        self.lookups += 1
        path = f"/topics/{self.args.topic}/messages?since_seq={n - 1}&limit=10"
        for _ in range(100):
            try:
                status, data, _ = self.request("GET", path)
            except (OSError, http.client.HTTPException):
                time.sleep(0.05)
                continue
            if status == 200:
                for held in json.loads(data)["messages"]:
                    if held["message"]["payload"]["n"] == n:
                        return held["seq"]
                return None
            time.sleep(0.05)
        raise RuntimeError(f"the history of {self.args.topic} could not be read")

    def publish(self, n):
        body = json.dumps({"id": f"m{n}", "payload": {"n": n}})
        for _ in range(200):
            try:
                status, data, node = self.request("POST", f"/topics/{self.args.topic}/messages", body)
            except ConnectionRefusedError:
                self.retries += 1
                time.sleep(0.02)
                continue
            except (OSError, http.client.HTTPException):
                # The answer was lost: the publish may or may not have happened.
                seq = self.published_as(n)
                if seq is not None:
                    return seq
                self.retries += 1
                continue
            if status == 200:
                self.nodes[node] = self.nodes.get(node, 0) + 1
                return json.loads(data)["seq"]
            code = json.loads(data).get("error", {}).get("code") if data.startswith(b"{") else None
            if status == 503 and code == "SHUTTING_DOWN":
                self.retries += 1
                continue
            if status in (502, 503, 504):  # the proxy or a node could not say: look it up
                seq = self.published_as(n)
                if seq is not None:
                    return seq
                self.retries += 1
                time.sleep(0.02)
                continue
            raise RuntimeError(f"publish {n}: HTTP {status} {data[:200]!r}")
        raise RuntimeError(f"publish {n}: not published after 200 attempts")


def failover(args):
    pids, args.addresses = {}, {}
    for item in args.nodes.split(","):  # NAME=PID@ADDRESS
        name, rest = item.split("=")
        pids[name], address = rest.split("@")
        args.addresses[address] = name
    deadline = time.monotonic() + args.timeout
    status, text = http_get(f"http://{args.proxy}/topics/{args.topic}")
    if status != 404:
        fail([f"the topic {args.topic} should not exist yet: HTTP {status} {text[:200]}"])
    req = urllib.request.Request(f"http://{args.proxy}/topics", data=json.dumps({"name": args.topic}).encode(),
                                 method="POST")
    with urllib.request.urlopen(req, timeout=5) as reply:
        assert reply.status == 201, reply.status

    subscribers = []
    for i in range(args.subscribers):  # one after the other, so that leastconn spreads them
        sub = Subscriber(i, args, deadline)
        sub.start()
        sub.subscribed.wait(20)
        subscribers.append(sub)
    errors = [e for s in subscribers for e in s.errors]
    if errors:
        fail(errors)
    first = {}
    for s in subscribers:
        first.setdefault(s.connections[0][1], []).append(s.index)
    print(f"  {len(subscribers)} subscribers through {args.proxy}, by node: "
          + ", ".join(f"{node}: {len(ids)}" for node, ids in sorted(first.items())))

    publisher = Publisher(args)
    signalled = {}  # node -> (monotonic time, signal name)
    interval = 1 / args.rate
    start = time.monotonic()
    for n in range(1, args.messages + 1):
        for node, at, sig in ((args.drain, args.drain_at, signal.SIGTERM), (args.kill, args.kill_at, signal.SIGKILL)):
            if node and n == at:
                os.kill(int(pids[node]), sig)
                signalled[node] = (time.monotonic(), sig.name)
                print(f"  before message {n}: {sig.name} to node {node} (pid {pids[node]})")
        seq = publisher.publish(n)
        if seq != n:
            fail([f"message {n} was published as seq {seq}: a publish happened twice or was lost"])
        publisher.seqs[n] = seq
        time.sleep(max(0.0, start + n * interval - time.monotonic()))
    print(f"  published 1..{args.messages} in {time.monotonic() - start:.1f} s "
          f"({publisher.retries} sent again, {publisher.lookups} looked up in the history); by node: "
          + ", ".join(f"{node}: {count}" for node, count in sorted(publisher.nodes.items())))

    for s in subscribers:
        s.join(max(0.0, deadline - time.monotonic()))

    reasons = [e for s in subscribers for e in s.errors]
    expected = list(range(1, args.messages + 1))
    for s in subscribers:
        if s.is_alive():
            reasons.append(f"subscriber {s.index}: still waiting at the deadline, {len(s.numbers)} received")
        if s.numbers != expected:
            missing = sorted(set(expected) - set(s.numbers))
            repeated = sorted({n for n in s.numbers if s.numbers.count(n) > 1})
            reasons.append(f"subscriber {s.index}: {len(s.numbers)} messages, missing {missing[:10]}, "
                           f"repeated {repeated[:10]}, in order: {s.numbers == sorted(s.numbers)}")
        if s.seqs != expected:
            reasons.append(f"subscriber {s.index}: the seqs are not 1..{args.messages}")
        for at, node in s.connections[1:]:
            for gone, (signalled_at, name) in signalled.items():
                if node == gone and at > signalled_at:
                    reasons.append(f"subscriber {s.index}: reconnected to node {node} after its {name}")
    for node, (_, name) in signalled.items():
        on_it = first.get(node, [])
        if not on_it:
            reasons.append(f"no subscriber was on node {node}: its {name} tested nothing (spread {first})")
        for i in on_it:
            if not subscribers[i].resumes:
                reasons.append(f"subscriber {i} on node {node} did not reconnect after its {name}")
    if args.drain:
        notified = sum(subscribers[i].shutdown_notices > 0 for i in first.get(args.drain, []))
        if notified != len(first.get(args.drain, [])):
            reasons.append(f"{notified} of the {len(first.get(args.drain, []))} subscribers of the drained node "
                           f"got server_shutdown")
    if reasons:
        fail(reasons)
    resumes = sum(len(s.resumes) for s in subscribers)
    print(f"  ok: every subscriber received 1..{args.messages} exactly once, in order; "
          f"{resumes} resumes, all recovered")


# ---------------------------------------------------------------- metrics


def exported(metrics_text):
    """{family: kind} and {sample name: [label dicts]} of a /metrics page."""
    kinds, samples = {}, {}
    for line in metrics_text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            kinds[name] = kind
        elif line and not line.startswith("#"):
            match = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s", line)
            labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
            samples.setdefault(match.group(1), []).append(labels)
    return kinds, samples


PROMQL_WORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values",
    "group", "inf", "nan",
}
# Series Prometheus makes itself for every target.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def selectors(expr):
    """[(metric name, {label: value} of its = matchers)] in a PromQL
    expression (Grafana variables taken out)."""
    expr = re.sub(r"\$\{[^}]*\}|\$[A-Za-z_]\w*", "1m", expr)
    found = []
    # Label lists of by/without/on/ignoring/group_*: not metrics.
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges
    for match in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*(\{[^}]*\})|([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", expr):
        name = match.group(1) or match.group(3)
        if match.group(4) or not name or name in PROMQL_WORDS:  # a function, a keyword
            continue
        labels = dict(re.findall(r'([a-zA-Z_]\w*)\s*=\s*"([^"]*)"', match.group(2) or ""))
        found.append((name, labels))
    # Strings and numbers are not selectors.
    return [(name, labels) for name, labels in found if not re.fullmatch(r"\d.*|e\d*", name)]


def dashboard_queries(dashboard):
    """[(where, PromQL)] of every panel target and templating query."""
    queries = []

    def panels(items):
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            queries.append((f"panel {panel.get('title')!r} {target.get('refId')}", target.get("expr", "")))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable.get("query")
            text = query.get("query", "") if isinstance(query, dict) else query
            inner = re.fullmatch(r"label_values\((.*?)(?:,\s*\w+)?\)", text.strip())
            queries.append((f"variable {variable.get('name')!r}", inner.group(1) if inner else text))
    return queries


def dashboard(args):
    with open(args.dashboard) as f:
        board = json.load(f)
    status, text = http_get(args.metrics)
    if status != 200:
        fail([f"{args.metrics}: HTTP {status} {text[:200]}"])
    kinds, samples = exported(text)
    reasons, names = [], set()
    queries = dashboard_queries(board)
    if not queries:
        fail([f"{args.dashboard} has no query"])
    ids = [p.get("id") for p in board.get("panels", [])]
    if len(ids) != len(set(ids)):
        reasons.append("two panels share an id")
    for where, expr in queries:
        found = selectors(expr)
        if not any(name.startswith("pubsub_") or name in PROMETHEUS_SERIES for name, _ in found):
            reasons.append(f"{where}: no pubsub metric in {expr!r}")
        for name, labels in found:
            names.add(name)
            if name in PROMETHEUS_SERIES:
                continue
            if name not in samples:
                reasons.append(f"{where}: {name} is not exported by the broker ({expr!r})")
                continue
            for label, value in labels.items():
                if label == "job":
                    continue
                if not any(s.get(label) == value for s in samples[name]):
                    reasons.append(f"{where}: {name} has no sample with {label}={value!r}")
    if reasons:
        fail(reasons)
    print(f"  ok: {len(queries)} queries over {len(names)} metrics, each exported by the broker "
          f"({len(kinds)} families at {args.metrics})")


# ---------------------------------------------------------------- prometheus


def prometheus(args):
    api = f"http://{args.url}/api/v1"
    deadline = time.monotonic() + args.timeout
    waiting = "nothing yet"
    while time.monotonic() < deadline:
        time.sleep(1)
        if args.expect_alert:
            status, text = http_get(f"{api}/alerts")
            if status != 200:
                waiting = f"/api/v1/alerts: HTTP {status}"
                continue
            alerts = [a for a in json.loads(text)["data"]["alerts"] if a["labels"].get("alertname") == args.expect_alert
                      and a["labels"].get("instance") == args.instance]
            if alerts:
                print(f"  ok: {args.expect_alert} {alerts[0]['state']} for {args.instance}")
                return
            waiting = f"no {args.expect_alert} alert for {args.instance}"
            continue
        status, text = http_get(f"{api}/targets")
        if status != 200:
            waiting = f"/api/v1/targets: HTTP {status}"
            continue
        targets = [t for t in json.loads(text)["data"]["activeTargets"] if t["labels"].get("job") == "pubsub"]
        up = [t for t in targets if t["health"] == "up"]
        if len(targets) != args.targets or len(up) != args.targets:
            waiting = f"{len(up)} of {len(targets)} pubsub targets up, {args.targets} expected"
            continue
        query = urllib.parse.quote(args.query)
        status, text = http_get(f"{api}/query?query={query}")
        results = json.loads(text)["data"]["result"] if status == 200 else []
        if len(results) != args.targets:
            waiting = f"{args.query}: {len(results)} series, {args.targets} expected"
            continue
        status, text = http_get(f"{api}/rules")
        rules = [r for g in json.loads(text)["data"]["groups"] for r in g["rules"]] if status == 200 else []
        if len(rules) < args.rules or any(r["health"] != "ok" for r in rules):
            waiting = f"rules: {[(r['name'], r['health'], r.get('lastError')) for r in rules]}"
            continue
        values = ", ".join(f"{r['metric'].get('instance')}={r['value'][1]}" for r in results)
        print(f"  ok: {len(up)} targets up; {args.query}: {values}; {len(rules)} alert rules loaded and evaluated")
        return
    fail([f"after {args.timeout} s: {waiting}"])


# ---------------------------------------------------------------- compose


def compose(args):
    import yaml

    here = os.path.dirname(os.path.abspath(args.file))
    with open(args.file) as f:
        spec = yaml.safe_load(f)
    services = spec.get("services", {})
    reasons = []
    nodes = {name: port for name, port in (pair.split(":") for pair in args.nodes.split(","))}
    wanted = {"redis", "haproxy", *nodes}
    if set(services) != wanted:
        reasons.append(f"services {sorted(services)}, expected {sorted(wanted)}")
        fail(reasons)

    def environment(service):
        env = services[service].get("environment", {})
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        return {k: str(v) for k, v in env.items()}

    def published(service):
        return {str(p).rsplit(":", 2)[-2] if str(p).count(":") else str(p) for p in services[service].get("ports", [])}

    with open(os.path.join(here, "pubsub.env")) as f:
        defaults = dict(line.strip().split("=", 1) for line in f if line.strip() and not line.startswith("#"))
    redis_cmd = services["redis"].get("command", [])
    redis_port = redis_cmd[redis_cmd.index("--port") + 1] if "--port" in redis_cmd else "6379"
    if redis_port != args.redis_port:
        reasons.append(f"redis listens on {redis_port}, the script's Redis on {args.redis_port}")
    node_ids = set()
    for name, port in nodes.items():
        service = services[name]
        env = environment(name)
        env_files = service.get("env_file", [])
        env_files = [env_files] if isinstance(env_files, str) else env_files
        if env_files != ["pubsub.env"]:
            reasons.append(f"{name}: env_file {env_files}, expected pubsub.env (the systemd unit's)")
        for file in env_files:
            if not os.path.exists(os.path.join(here, file)):
                reasons.append(f"{name}: env_file {file} does not exist")
        if env.get("ADDR") != f":{port}":
            reasons.append(f"{name}: ADDR {env.get('ADDR')}, expected :{port} (the script's)")
        if env.get("REDIS_URL") != f"redis://redis:{redis_port}":
            reasons.append(f"{name}: REDIS_URL {env.get('REDIS_URL')}, expected redis://redis:{redis_port}")
        node_ids.add(env.get("NODE_ID"))
        build = service.get("build", {})
        context = build.get("context") if isinstance(build, dict) else build
        if not context or not os.path.exists(os.path.join(here, context, "Dockerfile")):
            reasons.append(f"{name}: build context {context} has no Dockerfile")
        grace = str(service.get("stop_grace_period", "10s"))
        seconds = int(grace.rstrip("s")) if re.fullmatch(r"\d+s?", grace) else 0
        if seconds <= int(defaults.get("SHUTDOWN_TIMEOUT_SECS", 5)):
            reasons.append(f"{name}: stop_grace_period {grace} not above SHUTDOWN_TIMEOUT_SECS")
        if "redis" not in (service.get("depends_on") or {}):
            reasons.append(f"{name}: does not depend on redis")
    if len(node_ids) != len(nodes) or None in node_ids:
        reasons.append(f"the nodes' NODE_IDs {node_ids} are not set and distinct")

    haproxy = services["haproxy"]
    mounts = [str(v).split(":") for v in haproxy.get("volumes", [])]
    cfg = [m for m in mounts if m[1] == "/usr/local/etc/haproxy/haproxy.cfg"]
    if not cfg or os.path.realpath(os.path.join(here, cfg[0][0])) != os.path.realpath(args.haproxy_cfg):
        reasons.append(f"haproxy does not mount {args.haproxy_cfg} as its configuration: {mounts}")
    env = environment("haproxy")
    with open(args.haproxy_cfg) as f:
        cfg_text = f.read()
    for variable in re.findall(r'"\$\{(\w+)-[^}]*\}"', cfg_text):
        if variable not in env:
            reasons.append(f"haproxy: {variable} (used by haproxy.cfg) is not set")
    servers = re.findall(r'server (\w+) "\$\{(\w+)-', cfg_text)
    for (server, variable), (name, port) in zip(servers, nodes.items()):
        if env.get(variable) != f"{name}:{port}":
            reasons.append(f"haproxy: {variable}={env.get(variable)}, expected {name}:{port}")
    if env.get("HAPROXY_BIND") != f":{args.proxy_port}" or args.proxy_port not in published("haproxy"):
        reasons.append(f"haproxy: not listening and published on {args.proxy_port}: "
                       f"{env.get('HAPROXY_BIND')}, {services['haproxy'].get('ports')}")
    if not set(nodes) <= set(haproxy.get("depends_on") or []):
        reasons.append("haproxy does not depend on every node")
    if reasons:
        fail(reasons)
    print(f"  ok: {len(services)} services; the nodes read pubsub.env and listen on "
          f"{', '.join(nodes.values())}; haproxy mounts haproxy.cfg and listens on {args.proxy_port}")


# ---------------------------------------------------------------- settings


def seconds(text):
    """Seconds of a duration written 30, 30s, 2m or 1h."""
    match = re.fullmatch(r"(\d+)(ms|s|m|h)?", text.strip())
    if not match:
        fail([f"not a duration: {text!r}"])
    return int(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]


def settings(args):
    import subprocess
    import yaml

    deploy = args.deploy
    with open(os.path.join(deploy, "pubsub.env")) as f:
        lines = [line.strip() for line in f if line.strip()]
    env, named, reasons = {}, [], []  # named: set or commented out
    for line in lines:
        match = re.fullmatch(r"(#?)([A-Z_]+)=(\S+)", line)
        if match:
            named.append(match.group(2))
            if not match.group(1):
                env[match.group(2)] = match.group(3)
        elif not line.startswith("#"):
            reasons.append(f"pubsub.env: {line!r} is not KEY=value (no quotes, no spaces, no empty value)")
    help_text = subprocess.run([args.broker, "--help"], capture_output=True, text=True, check=True).stdout
    settings_known = set(re.findall(r"^  ([A-Z][A-Z_]+) ", help_text, re.M))
    for name in named:
        if name not in settings_known:
            reasons.append(f"pubsub.env names {name}, which the broker does not know (pubsub --help)")
    defaults = {name: value for name, value in re.findall(r"^  ([A-Z][A-Z_]+) +default (\S+)", help_text, re.M)}

    def setting(name):
        return int(env.get(name, defaults[name]))

    heartbeat, drain, limit = setting("HEARTBEAT_INTERVAL_SECS"), setting("SHUTDOWN_TIMEOUT_SECS"), \
        setting("MAX_CONNECTIONS")
    with open(os.path.join(deploy, "haproxy.cfg")) as f:
        tunnel = re.findall(r"^\s*timeout tunnel (\S+)", f.read(), re.M)
    if len(tunnel) != 1 or seconds(tunnel[0]) <= heartbeat:
        reasons.append(f"haproxy.cfg: timeout tunnel {tunnel} not above HEARTBEAT_INTERVAL_SECS ({heartbeat} s)")
    with open(os.path.join(deploy, "nginx.conf")) as f:
        nginx = f.read()
    for directive in ("proxy_read_timeout", "proxy_send_timeout"):
        values = re.findall(rf"^\s*{directive} (\S+);", nginx, re.M)
        if len(values) != 1 or seconds(values[0]) <= heartbeat:
            reasons.append(f"nginx.conf: {directive} {values} not above HEARTBEAT_INTERVAL_SECS ({heartbeat} s)")
    with open(os.path.join(deploy, "pubsub.service")) as f:
        stop = re.findall(r"^TimeoutStopSec=(\S+)$", f.read(), re.M)
    if len(stop) != 1 or seconds(stop[0]) <= drain:
        reasons.append(f"pubsub.service: TimeoutStopSec {stop} not above SHUTDOWN_TIMEOUT_SECS ({drain} s)")
    with open(os.path.join(deploy, "alerts.yml")) as f:
        rules = {r["alert"]: r for g in yaml.safe_load(f)["groups"] for r in g["rules"]}
    if seconds(rules["PubSubDown"].get("for", "0s")) <= drain:
        reasons.append(f"alerts.yml: PubSubDown's `for` is not above SHUTDOWN_TIMEOUT_SECS ({drain} s): "
                       f"every drain would fire it")
    near = re.search(r">\s*0\.8\s*\*\s*(\d+)", rules["PubSubConnectionsNearLimit"]["expr"])
    if not near or int(near.group(1)) != limit:
        reasons.append(f"alerts.yml: PubSubConnectionsNearLimit does not compare with MAX_CONNECTIONS ({limit})")
    if reasons:
        fail(reasons)
    print(f"  ok: pubsub.env's {len(env)} settings are the broker's; tunnel and read timeouts above the "
          f"{heartbeat} s heartbeat; TimeoutStopSec and PubSubDown above the {drain} s drain; "
          f"the connections alert at 80% of {limit}")


# ---------------------------------------------------------------- syscalls


def syscall_group(name, seen=None):
    """The system calls of a filter group (`@system-service`) or name,
    nested groups expanded."""
    import subprocess

    if not name.startswith("@"):
        return {name}
    seen = seen if seen is not None else set()
    if name in seen:
        return set()
    seen.add(name)
    listing = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True,
                             check=True).stdout
    calls = set()
    for line in listing.splitlines()[1:]:
        item = line.strip()
        if item and not item.startswith("#"):
            calls |= syscall_group(item, seen)
    if not calls:
        fail([f"systemd-analyze knows no system call group {name}"])
    return calls


def syscalls(args):
    allowed, denied, lines = set(), set(), 0
    with open(args.unit) as f:
        for line in f:
            if not line.startswith("SystemCallFilter="):
                continue
            lines += 1
            value = line.split("=", 1)[1].strip()
            deny = value.startswith("~")
            for item in value.lstrip("~").split():
                (denied if deny else allowed).update(syscall_group(item))
    if not lines:
        fail([f"{args.unit} has no SystemCallFilter"])
    permitted = allowed - denied
    made, writable_exec = set(), []
    with open(args.strace) as f:
        for line in f:
            match = re.match(r"(?:\d+\s+)?([a-z_0-9]+)\((.*)", line)
            if not match:
                continue
            made.add(match.group(1))
            # What MemoryDenyWriteExecute=yes refuses: memory both writable
            # and executable, or made executable afterwards.
            call, rest = match.groups()
            if (call in ("mprotect", "pkey_mprotect") and "PROT_EXEC" in rest) or (
                    call == "mmap" and "PROT_EXEC" in rest and "PROT_WRITE" in rest) or call == "shmat":
                writable_exec.append(line.strip())
    if len(made) < 20:
        fail([f"{args.strace} shows only {sorted(made)}: was the broker traced?"])
    reasons = []
    refused = sorted(made - permitted)
    if refused:
        reasons.append(f"the broker calls {', '.join(refused)}, which the SystemCallFilter of {args.unit} does "
                       f"not allow: systemd would kill it (SIGSYS)")
    with open(args.unit) as f:
        deny_write_execute = any(line.strip() == "MemoryDenyWriteExecute=yes" for line in f)
    if deny_write_execute and writable_exec:
        reasons.append(f"MemoryDenyWriteExecute=yes would refuse {writable_exec[:3]}")
    if reasons:
        fail(reasons)
    print(f"  ok: the broker made {len(made)} distinct system calls, all among the {len(permitted)} the filter "
          f"allows" + ("; no writable and executable memory" if deny_write_execute else ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("failover")
    p.add_argument("--proxy", required=True, help="HOST:PORT of the proxy")
    p.add_argument("--nodes", required=True, help="NAME=PID@HOST:PORT,... of the nodes")
    p.add_argument("--drain", help="the node to send SIGTERM")
    p.add_argument("--kill", help="the node to send SIGKILL")
    p.add_argument("--topic", required=True)
    p.add_argument("--subscribers", type=int, default=12)
    p.add_argument("--messages", type=int, default=400)
    p.add_argument("--rate", type=float, default=80, help="publishes per second")
    p.add_argument("--drain-at", type=int, default=100, help="the message before which the drain starts")
    p.add_argument("--kill-at", type=int, default=250, help="the message before which the kill comes")
    p.add_argument("--timeout", type=float, default=60)
    p = commands.add_parser("dashboard")
    p.add_argument("--dashboard", required=True)
    p.add_argument("--metrics", required=True, help="a running broker's /metrics URL")
    p = commands.add_parser("prometheus")
    p.add_argument("--url", required=True, help="HOST:PORT of Prometheus")
    p.add_argument("--targets", type=int, default=3)
    p.add_argument("--query", default="pubsub_uptime_seconds")
    p.add_argument("--rules", type=int, default=1)
    p.add_argument("--expect-alert")
    p.add_argument("--instance")
    p.add_argument("--timeout", type=float, default=60)
    p = commands.add_parser("compose")
    p.add_argument("--file", required=True)
    p.add_argument("--haproxy-cfg", required=True)
    p.add_argument("--nodes", required=True, help="SERVICE:PORT,... of the nodes")
    p.add_argument("--redis-port", required=True)
    p.add_argument("--proxy-port", required=True)
    p = commands.add_parser("settings")
    p.add_argument("--deploy", required=True, help="the deploy/ directory")
    p.add_argument("--broker", required=True, help="the pubsub binary, for --help")
    p = commands.add_parser("syscalls")
    p.add_argument("--unit", required=True)
    p.add_argument("--strace", required=True, help="the output of strace -f -o")
    args = parser.parse_args()
    commands = {"failover": failover, "dashboard": dashboard, "prometheus": prometheus, "compose": compose,
                "settings": settings, "syscalls": syscalls}
    commands[args.command](args)


if __name__ == "__main__":
    main()
