//! SQLite cache of file digests keyed by (device, inode, size, mtime_ns, ctime_ns).
