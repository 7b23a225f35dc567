//! The publish fast path: one pass over a client frame's bytes that
//! recognizes the common publish frame,
//! `{"type":"publish","topic":"...","message":{...},"request_id":"..."}`
//! (keys in any order, any JSON whitespace, `request_id` optional), and
//! gives its fields borrowed from the frame, allocating nothing.
//!
//! What it owns: the answer "yes, this is a valid publish, and here are its
//! topic, message and request_id", or "not sure". What it must not do: say
//! yes to a frame that serde's path (`parse_client_frame_by_serde`) refuses,
//! or give other fields than it gives. So it says "not sure" to everything
//! it does not check as serde does, and serde then decides, and words every
//! error: a `type` other than `"publish"`; a topic, type or request_id that
//! is not a plain string (an escape in it, a number, an object...); a key
//! with an escape (it could spell a known one); a key given twice (serde
//! refuses a known one given twice, at the top of the frame and of the
//! `message`); a message that is not an object with a non-empty string `id`
//! and a `payload`; nesting deeper than [`MAX_DEPTH`]; any error.
//!
//! Every value it skips (the message's, unknown fields') is checked as
//! serde_json checks a `RawValue`: RFC 8259's grammar, strings without raw
//! control characters and with well-formed escapes (a lone surrogate
//! escape such as `"\ud800"` passes, as it does for a `RawValue`), numbers
//! of any size. The text is a `&str`, so it is UTF-8 already.
//!
//! Self-contained on purpose: it names nothing of the protocol but the
//! frame's field names; the protocol module turns its answer into a
//! request.

/// The deepest a value inside a publish's `message` may nest here: the
/// frame and the message are two levels, so that nothing deeper than 128
/// levels, serde_json's recursion limit, is taken on this path. serde_json
/// keeps no such limit inside a `RawValue` (it checks one without
/// recursion), so a deeper message is left to it and is taken as it always
/// was.
pub const MAX_DEPTH: u32 = 126;

/// A publish frame's fields, borrowed from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish<'a> {
    /// The topic as written between its quotes (it had no escape).
    pub topic: &'a str,
    /// The message's JSON text as the publisher wrote it, from `{` to `}`.
    pub message: &'a str,
    /// The request_id as written between its quotes; `None` if absent or
    /// `null`.
    pub request_id: Option<&'a str>,
}

/// The fields serde's path knows at the top of a frame: each may be given
/// once. Any other key is ignored, as serde ignores it.
const FRAME_FIELDS: [&str; 9] = [
    "type",
    "topic",
    "message",
    "client_id",
    "last_n",
    "since_seq",
    "epoch",
    "request_id",
    "token",
];

/// The fields of a frame `text` that is a valid publish, or `None` when it
/// is anything else or not sure (see the module's documentation).
pub fn publish(text: &str) -> Option<Publish<'_>> {
    let mut cursor = Cursor { text, at: 0 };
    cursor.expect(b'{')?;
    let mut seen = 0u16;
    let (mut typed, mut topic, mut message, mut request_id) = (false, None, None, None);
    loop {
        let key = cursor.key()?;
        if let Some(index) = FRAME_FIELDS.iter().position(|field| *field == key) {
            let bit = 1 << index;
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
        }
        match key {
            "type" => {
                if cursor.plain_string()? != "publish" {
                    return None;
                }
                typed = true;
            }
            "topic" => topic = Some(cursor.plain_string()?),
            "message" => message = Some(cursor.message()?),
            "request_id" => request_id = cursor.plain_string_or_null()?,
            _ => cursor.value()?,
        }
        match cursor.token()? {
            b',' => {}
            b'}' => break,
            _ => return None,
        }
    }
    cursor.skip_whitespace();
    if cursor.at != text.len() || !typed {
        return None;
    }
    Some(Publish {
        topic: topic?,
        message: message?,
        request_id,
    })
}

/// A position in the frame's text.
struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    #[inline(always)]
    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    /// Past JSON whitespace: space, tab, line feed, carriage return.
    #[inline(always)]
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// The next byte that is not whitespace, taken.
    #[inline(always)]
    fn token(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.next()
    }

    #[inline(always)]
    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.token()? == byte).then_some(())
    }

    /// An object's key and its colon: the key as written, if it has no
    /// escape.
    #[inline(always)]
    fn key(&mut self) -> Option<&'a str> {
        let key = self.plain_string()?;
        self.expect(b':')?;
        Some(key)
    }

    /// A string that has no escape: its text between the quotes.
    #[inline(always)]
    fn plain_string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        if self.rest_of_string()? {
            return None;
        }
        self.text.get(start..self.at - 1)
    }

    /// A plain string ([`plain_string`](Self::plain_string)), or `null`:
    /// `None` inside for `null`.
    fn plain_string_or_null(&mut self) -> Option<Option<&'a str>> {
        self.skip_whitespace();
        match self.peek()? {
            b'n' => {
                self.at += 1;
                self.literal(b"ull")?;
                Some(None)
            }
            _ => self.plain_string().map(Some),
        }
    }

    /// After a string's opening quote: past its closing quote. Whether it
    /// had an escape; `None` for a raw control character, a bad escape or
    /// no closing quote.
    #[inline(always)]
    fn rest_of_string(&mut self) -> Option<bool> {
        let bytes = self.text.as_bytes();
        let mut escaped = false;
        loop {
            self.at += special_byte(bytes.get(self.at..)?)?;
            match self.next()? {
                b'"' => return Some(escaped),
                b'\\' => {
                    self.escape()?;
                    escaped = true;
                }
                _ => return None,
            }
        }
    }

    /// After a backslash: one escape. `\uXXXX` needs four hex digits, of
    /// any value (serde_json's `RawValue` takes a lone surrogate).
    #[inline(always)]
    fn escape(&mut self) -> Option<()> {
        match self.next()? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(()),
            b'u' => {
                let hex = self.text.as_bytes().get(self.at..self.at + 4)?;
                self.at += 4;
                hex.iter().all(u8::is_ascii_hexdigit).then_some(())
            }
            _ => None,
        }
    }

    /// The rest of `true`, `false` or `null`, after its first letter.
    #[inline(always)]
    fn literal(&mut self, rest: &[u8]) -> Option<()> {
        let end = self.at + rest.len();
        (self.text.as_bytes().get(self.at..end)? == rest).then(|| self.at = end)
    }

    /// After a number's first byte (`-` or a digit): the rest of it, by
    /// RFC 8259's grammar. What follows it is the caller's to check (a
    /// digit after a leading `0` is not a `,`, `]` or `}`).
    #[inline(always)]
    fn number(&mut self, first: u8) -> Option<()> {
        let lead = match first {
            b'-' => self.next()?,
            digit => digit,
        };
        match lead {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.digit()?;
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.digit()?;
            self.digits();
        }
        Some(())
    }

    #[inline(always)]
    fn digit(&mut self) -> Option<()> {
        self.next()?.is_ascii_digit().then_some(())
    }

    #[inline(always)]
    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }

    /// A publish's `message`: an object whose `id` is a non-empty string
    /// (escapes allowed: it is passed on as written) and which has a
    /// `payload`, any value; each given once, other keys ignored, as serde
    /// decodes it in `validate_message`. Its text from `{` to `}`.
    fn message(&mut self) -> Option<&'a str> {
        self.expect(b'{')?;
        let start = self.at - 1;
        let (mut id, mut payload) = (false, false);
        loop {
            match self.key()? {
                "id" if !id => {
                    id = true;
                    self.expect(b'"')?;
                    let start = self.at;
                    self.rest_of_string()?;
                    if self.at - start == 1 {
                        return None;
                    }
                }
                "payload" if !payload => {
                    payload = true;
                    self.value()?;
                }
                "id" | "payload" => return None,
                _ => self.value()?,
            }
            match self.token()? {
                b',' => {}
                b'}' => break,
                _ => return None,
            }
        }
        if !(id && payload) {
            return None;
        }
        self.text.get(start..self.at)
    }

    /// One JSON value of any type, checked and skipped, nested at most
    /// [`MAX_DEPTH`] deep. Without recursion: a bit per open container
    /// (set for an object) says what closes it.
    fn value(&mut self) -> Option<()> {
        let mut objects: u128 = 0;
        let mut depth = 0;
        'value: loop {
            match self.token()? {
                b'"' => {
                    self.rest_of_string()?;
                }
                open @ (b'{' | b'[') => {
                    if depth == MAX_DEPTH {
                        return None;
                    }
                    depth += 1;
                    objects = objects << 1 | u128::from(open == b'{');
                    self.skip_whitespace();
                    let close = if open == b'{' { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.at += 1;
                        depth -= 1;
                        objects >>= 1;
                    } else {
                        if open == b'{' {
                            self.key_with_escapes()?;
                        }
                        continue 'value;
                    }
                }
                b't' => self.literal(b"rue")?,
                b'f' => self.literal(b"alse")?,
                b'n' => self.literal(b"ull")?,
                first @ (b'-' | b'0'..=b'9') => self.number(first)?,
                _ => return None,
            }
            // A value ended: it is followed by the next one in its
            // container, or it closes containers.
            loop {
                if depth == 0 {
                    return Some(());
                }
                let in_object = objects & 1 == 1;
                match self.token()? {
                    b',' => {
                        if in_object {
                            self.key_with_escapes()?;
                        }
                        continue 'value;
                    }
                    b'}' if in_object => {}
                    b']' if !in_object => {}
                    _ => return None,
                }
                depth -= 1;
                objects >>= 1;
            }
        }
    }

    /// A key inside a value, where any key goes (escapes too), and its
    /// colon.
    #[inline(always)]
    fn key_with_escapes(&mut self) -> Option<()> {
        self.expect(b'"')?;
        self.rest_of_string()?;
        self.expect(b':')
    }
}

/// Where the first byte that ends a string's plain run is in `bytes`: a
/// quote, a backslash or a control character. Eight bytes at a time, as
/// serde_json does: the high bit of a byte is set where the byte is zero
/// (after an exclusive or with a quote or a backslash) or below 0x20. A
/// borrow from a flagged byte can flag the bytes above it too, but never
/// one below the first, so the lowest flag (little-endian: the first byte)
/// is the answer.
#[inline(always)]
fn special_byte(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::MAX / 255;
    const HIGH_BITS: u64 = ONES << 7;
    let zero_bytes = |word: u64| word.wrapping_sub(ONES) & !word;
    let mut words = bytes.chunks_exact(8);
    let mut offset = 0;
    for word in &mut words {
        let word = u64::from_le_bytes(word.try_into().expect("a chunk of 8 bytes"));
        let flags = zero_bytes(word ^ (ONES * u64::from(b'"')))
            | zero_bytes(word ^ (ONES * u64::from(b'\\')))
            | (word.wrapping_sub(ONES * 0x20) & !word);
        let flags = flags & HIGH_BITS;
        if flags != 0 {
            return Some(offset + flags.trailing_zeros() as usize / 8);
        }
        offset += 8;
    }
    let rest = words.remainder();
    Some(
        offset
            + rest
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?,
    )
}

#[cfg(test)]
mod tests;
