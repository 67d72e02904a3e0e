//! Data snapshots: a sorted BLAKE3 manifest of every file under a directory and its digest.
