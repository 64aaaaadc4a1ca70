//! Placeholder: the entra decoder is being written.

use super::{CloudEvent, DecodeError};

pub fn decode<'a>(_text: &'a str, _out: &mut Vec<CloudEvent<'a>>) -> Result<(), DecodeError> {
    Err(DecodeError::UnknownShape)
}
