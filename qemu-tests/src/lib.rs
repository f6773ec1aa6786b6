//! The QEMU test tier: boots images built by `cargo xtask image` under QEMU
//! (q35, OVMF, TCG) and checks them from outside, through the serial console
//! and the API.
