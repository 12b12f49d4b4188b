//! placeholder: the etcd cluster backend (being written).
