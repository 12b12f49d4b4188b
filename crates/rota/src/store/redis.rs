//! placeholder: the redis store (being written).
