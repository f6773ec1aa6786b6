//! Small, pure IPv4 network types used by the configuration models.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network or interface address in CIDR notation (`10.0.0.0/16`,
/// `10.9.0.10/24`). The host bits are kept, so it serves for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Cidr {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Ipv4Cidr> {
        (prefix <= 32).then_some(Ipv4Cidr { addr, prefix })
    }

    /// The netmask as a `u32`.
    pub fn mask(self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// The network address (host bits cleared).
    pub fn network(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The same network with host bits cleared.
    pub fn trunc(self) -> Ipv4Cidr {
        Ipv4Cidr {
            addr: self.network(),
            prefix: self.prefix,
        }
    }

    /// The broadcast address.
    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    pub fn overlaps(self, other: Ipv4Cidr) -> bool {
        let p = self.prefix.min(other.prefix);
        let mask = Ipv4Cidr {
            addr: self.addr,
            prefix: p,
        }
        .mask();
        u32::from(self.addr) & mask == u32::from(other.addr) & mask
    }

    /// How many subnets of length `prefix` this network holds (saturating).
    pub fn subnet_count(self, prefix: u8) -> u64 {
        if prefix < self.prefix || prefix > 32 {
            return 0;
        }
        1u64 << (prefix - self.prefix)
    }

    /// The `index`-th subnet of length `prefix`, if there is one.
    pub fn subnet(self, prefix: u8, index: u64) -> Option<Ipv4Cidr> {
        if index >= self.subnet_count(prefix) {
            return None;
        }
        let size = 1u64 << (32 - u32::from(prefix));
        let base = u64::from(u32::from(self.network())) + index * size;
        Some(Ipv4Cidr {
            addr: Ipv4Addr::from(u32::try_from(base).ok()?),
            prefix,
        })
    }

    /// The `n`-th host address (1 = first usable).
    pub fn host(self, n: u32) -> Option<Ipv4Addr> {
        let size = if self.prefix == 0 {
            u64::from(u32::MAX) + 1
        } else {
            1u64 << (32 - u32::from(self.prefix))
        };
        (u64::from(n) < size.saturating_sub(1) && n > 0)
            .then(|| Ipv4Addr::from(u32::from(self.network()) + n))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not in CIDR notation, expected an address and a prefix length like 10.0.0.0/16"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("prefix length `{prefix}` is not a number from 0 to 32"))?;
        Ok(Ipv4Cidr { addr, prefix })
    }
}

impl serde::Serialize for Ipv4Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(cidr: &str, expected: &str) {
        let actual = match cidr.parse::<Ipv4Cidr>() {
            Ok(c) => format!(
                "net {} bcast {} /24s {} first {:?}",
                c.trunc(),
                c.broadcast(),
                c.subnet_count(24),
                c.subnet(24, 1)
            ),
            Err(e) => e,
        };
        assert_eq!(actual, expected, "for {cidr}");
    }

    #[test]
    fn parse_and_split() {
        check(
            "10.200.0.0/16",
            "net 10.200.0.0/16 bcast 10.200.255.255 /24s 256 first Some(Ipv4Cidr { addr: 10.200.1.0, prefix: 24 })",
        );
        check(
            "10.9.0.10/24",
            "net 10.9.0.0/24 bcast 10.9.0.255 /24s 1 first None",
        );
        check(
            "10.9.0.0",
            "`10.9.0.0` is not in CIDR notation, expected an address and a prefix length like 10.0.0.0/16",
        );
        check(
            "10.9.0.0/33",
            "prefix length `33` is not a number from 0 to 32",
        );
        check("10.9.0/8", "`10.9.0` is not an IPv4 address");
    }

    #[test]
    fn overlaps() {
        let a: Ipv4Cidr = "10.0.0.0/8".parse().unwrap();
        let b: Ipv4Cidr = "10.9.0.0/24".parse().unwrap();
        let c: Ipv4Cidr = "192.168.0.0/16".parse().unwrap();
        assert!(a.overlaps(b) && b.overlaps(a));
        assert!(!a.overlaps(c));
        assert_eq!(b.host(1), Some(Ipv4Addr::new(10, 9, 0, 1)));
        assert_eq!(b.host(255), None);
    }
}
