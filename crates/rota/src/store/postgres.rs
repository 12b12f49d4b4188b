//! placeholder: the postgres store (being written).
