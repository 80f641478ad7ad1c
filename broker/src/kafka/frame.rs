//! Kafka framing: every request is a 4-byte big-endian length followed by that many bytes.

use bytes::{Buf, Bytes, BytesMut};

/// Why a connection's byte stream cannot be framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("request of {size} bytes is larger than broker.max_frame_size ({max} bytes)")]
    TooLarge { size: usize, max: usize },
    #[error("negative request length {0}")]
    Negative(i32),
}

/// Takes the next complete request off the front of `buf`, if there is one.
pub(crate) fn next_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let length = i32::from_be_bytes(buf[..4].try_into().expect("4 bytes"));
    let size = usize::try_from(length).map_err(|_| FrameError::Negative(length))?;
    if size > max {
        return Err(FrameError::TooLarge { size, max });
    }
    if buf.len() < 4 + size {
        buf.reserve(4 + size - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(size).freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_split_only_when_complete() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0, 0, 0, 3, b'a', b'b']);
        assert_eq!(next_frame(&mut buf, 100), Ok(None));
        buf.extend_from_slice(&[b'c', 0, 0, 0, 1, b'd', 0]);
        assert_eq!(
            next_frame(&mut buf, 100),
            Ok(Some(Bytes::from_static(b"abc")))
        );
        assert_eq!(
            next_frame(&mut buf, 100),
            Ok(Some(Bytes::from_static(b"d")))
        );
        assert_eq!(next_frame(&mut buf, 100), Ok(None));
        assert_eq!(&buf[..], &[0]);
    }

    #[test]
    fn oversized_and_negative_lengths_are_refused() {
        let mut buf = BytesMut::from(&[0u8, 0, 1, 0][..]);
        assert_eq!(
            next_frame(&mut buf, 255),
            Err(FrameError::TooLarge {
                size: 256,
                max: 255
            })
        );
        let mut buf = BytesMut::from(&[0xFFu8, 0xFF, 0xFF, 0xFF][..]);
        assert_eq!(next_frame(&mut buf, 255), Err(FrameError::Negative(-1)));
    }
}
