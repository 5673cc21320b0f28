//! Striped Reed-Solomon layout and the self-describing shard file format.
