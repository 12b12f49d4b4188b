//! placeholder: the consul cluster backend (being written).
