//! The protobuf wire format: varints, tags and length-delimited fields, with every read
//! bounds-checked (a truncated or hostile body is an error, never a panic).

use super::ProtoError;

/// Wire types this decoder understands (groups, 3 and 4, are refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Varint,
    Fixed64,
    Len,
    Fixed32,
}

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut v: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or(ProtoError::Truncated)?;
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(ProtoError::VarintOverflow);
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ProtoError::VarintOverflow)
    }

    /// The next field's number and wire type.
    pub fn key(&mut self) -> Result<(u32, Wire), ProtoError> {
        let k = self.varint()?;
        let tag = u32::try_from(k >> 3).map_err(|_| ProtoError::BadTag(k >> 3))?;
        if tag == 0 {
            return Err(ProtoError::BadTag(0));
        }
        let wire = match k & 7 {
            0 => Wire::Varint,
            1 => Wire::Fixed64,
            2 => Wire::Len,
            5 => Wire::Fixed32,
            w => return Err(ProtoError::WireType { tag, wire: w as u8 }),
        };
        Ok((tag, wire))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        let end = self.pos.checked_add(n).ok_or(ProtoError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(ProtoError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], ProtoError> {
        let n = usize::try_from(self.varint()?).map_err(|_| ProtoError::Truncated)?;
        self.take(n)
    }

    pub fn fixed64(&mut self) -> Result<u64, ProtoError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }

    /// Skip a field this decoder does not know (newer clients may send more fields).
    pub fn skip(&mut self, wire: Wire) -> Result<(), ProtoError> {
        match wire {
            Wire::Varint => self.varint().map(|_| ()),
            Wire::Fixed64 => self.take(8).map(|_| ()),
            Wire::Len => self.bytes().map(|_| ()),
            Wire::Fixed32 => self.take(4).map(|_| ()),
        }
    }
}

/// Append a varint (used by tests and by the envelope encoder).
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}
