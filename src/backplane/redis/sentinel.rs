//! Finding the Redis master through Redis Sentinel
//! (`redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER`): the
//! sentinels are asked in turn (`SENTINEL get-master-addr-by-name`, a short
//! timeout each) where the master is, and the address one names is taken
//! only once `ROLE` there says `master`. The password, if any, is sent to
//! the sentinels and to the master alike.
//!
//! It owns the URL's parsing and the discovery, and nothing else: it keeps
//! no connection, and does not retry (the threads' reconnect loops do).

use redis::{ErrorKind, RedisError, RedisResult, Value};
use std::time::Duration;

/// How long one sentinel may take to connect and answer before the next
/// is asked.
const ASK_TIMEOUT: Duration = Duration::from_millis(300);

pub const SCHEME: &str = "redis+sentinel://";

/// The sentinels of one master, from a `redis+sentinel://` URL.
#[derive(Clone)]
pub struct Sentinels {
    /// A client of each sentinel, in the URL's order.
    sentinels: Vec<redis::Client>,
    master_name: String,
    /// `user:password@` as the URL has it (percent-encoded), or empty.
    userinfo: String,
}

impl Sentinels {
    /// The sentinels and the master's name `url` names, or why it names
    /// none.
    pub fn parse(url: &str) -> Result<Sentinels, String> {
        let shape = "expected redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER";
        let rest = url.strip_prefix(SCHEME).ok_or(shape)?;
        let (authority, master_name) = rest.split_once('/').ok_or(shape)?;
        if master_name.is_empty() || master_name.contains(['/', '?', '#']) {
            return Err(format!("{shape}: no master name"));
        }
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
            None => (String::new(), authority),
        };
        let sentinels = hosts
            .split(',')
            .map(|host| {
                if host
                    .rsplit_once(':')
                    .is_none_or(|(_, port)| port.parse::<u16>().is_err())
                {
                    return Err(format!("{shape}: {host:?} is not HOST:PORT"));
                }
                redis::Client::open(format!("redis://{userinfo}{host}"))
                    .map_err(|e| format!("{shape}: {host:?}: {e}"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Sentinels {
            sentinels,
            master_name: master_name.to_string(),
            userinfo,
        })
    }

    /// A connection to the master as a sentinel names it now, its `ROLE`
    /// checked, and a client of the same server (for more connections to
    /// it). Each sentinel is asked in turn until one names a master that
    /// says it is one; an error says why none did.
    pub fn connect(&self, timeout: Duration) -> RedisResult<(redis::Connection, redis::Client)> {
        let mut why = Vec::new();
        for sentinel in &self.sentinels {
            match self.ask(sentinel).and_then(|master| {
                let conn = connect_to_master(&master, timeout)?;
                Ok((conn, master))
            }) {
                Ok(found) => return Ok(found),
                Err(e) => why.push(e.to_string()),
            }
        }
        Err(RedisError::from((
            ErrorKind::Io,
            "no sentinel names a reachable master",
            why.join("; "),
        )))
    }

    /// A client of the master `sentinel` names.
    fn ask(&self, sentinel: &redis::Client) -> RedisResult<redis::Client> {
        let mut conn = sentinel.get_connection_with_timeout(ASK_TIMEOUT)?;
        conn.set_read_timeout(Some(ASK_TIMEOUT))?;
        conn.set_write_timeout(Some(ASK_TIMEOUT))?;
        let named: Option<(String, String)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.master_name)
            .query(&mut conn)?;
        let Some((host, port)) = named else {
            return Err(RedisError::from((
                ErrorKind::MasterNameNotFoundBySentinel,
                "a sentinel knows no such master",
                self.master_name.clone(),
            )));
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        redis::Client::open(format!("redis://{}{host}:{port}", self.userinfo))
    }
}

/// A connection to `master`, once `ROLE` there says `master`: a sentinel
/// may still name a server that was demoted, or is gone.
fn connect_to_master(master: &redis::Client, timeout: Duration) -> RedisResult<redis::Connection> {
    let mut conn = master.get_connection_with_timeout(timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    let role: Value = redis::cmd("ROLE").query(&mut conn)?;
    match role {
        Value::Array(items) if matches!(items.first(), Some(Value::BulkString(r)) if r == b"master") => {
            Ok(conn)
        }
        _ => Err(RedisError::from((
            ErrorKind::Io,
            "the server a sentinel names is not a master",
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_sentinels_and_a_master() {
        let s = Sentinels::parse("redis+sentinel://127.0.0.1:26379,[::1]:26380/mymaster").unwrap();
        assert_eq!((s.sentinels.len(), s.master_name.as_str()), (2, "mymaster"));
        assert_eq!(s.userinfo, "");
        let s = Sentinels::parse("redis+sentinel://:pa%40ss@h:1/m").unwrap();
        assert_eq!(s.userinfo, ":pa%40ss@");
        for bad in [
            "redis+sentinel://h:1",
            "redis+sentinel://h:1/",
            "redis+sentinel://h/m",
            "redis+sentinel://h:1,/m",
            "redis+sentinel://h:x/m",
            "redis://h:1/m",
        ] {
            assert!(Sentinels::parse(bad).is_err(), "{bad}");
        }
    }
}
