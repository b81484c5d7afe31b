"""`auditor lock`: a pinned, digest-locked rebuild recipe for an image, and its verification."""
