//! placeholder: the zookeeper cluster backend (being written).
