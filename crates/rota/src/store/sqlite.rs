//! placeholder: the sqlite store (being written).
