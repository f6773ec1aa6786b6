//! Pure models of a Strata disk image: the partition plan, the manifest and
//! the update bundle format. No I/O beyond what callers hand in; the xtask
//! builds images with it and the agent verifies and installs bundles with it.
