//! First-boot providers: where a node finds its user-data (QEMU fw_cfg, a
//! `STRATA-CFG` filesystem, a kernel command line URL, cloud metadata) and
//! how what it learned is kept under `/var/lib/strata` for later boots.
