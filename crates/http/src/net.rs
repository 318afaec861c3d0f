//! Which IP addresses belong to the public internet.
//!
//! Merchants give us URLs (webhook endpoints) that our servers then call. A
//! URL that points inside a network — ours, the cloud's metadata service at
//! 169.254.169.254, a NAT64 or 6to4 address that embeds one of those —
//! would let a merchant make our servers reach what only we should reach
//! (server-side request forgery). The External API refuses such literal
//! addresses when an endpoint is saved; the webhook dispatcher checks every
//! resolved address again when it connects, because DNS can change.
//!
//! The rule is an allow-list in spirit: IPv6 is public only inside global
//! unicast (`2000::/3`) less its special-purpose blocks, and IPv4 only
//! outside the IANA special-purpose registry's non-global blocks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// True when `ip` is a globally routable unicast address: not loopback,
/// private, link-local, unique-local, shared (CGNAT), multicast,
/// unspecified, broadcast, documentation, benchmarking or reserved.
/// IPv4-mapped, NAT64 and 6to4 IPv6 addresses are judged by the IPv4
/// address they carry.
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_ipv4(ip),
        IpAddr::V6(ip) => is_public_ipv6(ip),
    }
}

/// True for loopback addresses, IPv4-mapped ones (`::ffff:127.0.0.1`)
/// included.
pub fn is_loopback_ip(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// IPv4 blocks that are not globally reachable (IANA's special-purpose
/// registry, RFC 6890 and successors), as (network, prefix length).
const NON_GLOBAL_V4: [([u8; 4], u32); 14] = [
    ([0, 0, 0, 0], 8),       // "this network"
    ([10, 0, 0, 0], 8),      // private
    ([100, 64, 0, 0], 10),   // shared address space (carrier-grade NAT)
    ([127, 0, 0, 0], 8),     // loopback
    ([169, 254, 0, 0], 16),  // link-local (cloud metadata services live here)
    ([172, 16, 0, 0], 12),   // private
    ([192, 0, 0, 0], 24),    // IETF protocol assignments
    ([192, 0, 2, 0], 24),    // documentation (TEST-NET-1)
    ([192, 88, 99, 0], 24),  // 6to4 relay anycast (deprecated)
    ([192, 168, 0, 0], 16),  // private
    ([198, 18, 0, 0], 15),   // benchmarking
    ([198, 51, 100, 0], 24), // documentation (TEST-NET-2)
    ([203, 0, 113, 0], 24),  // documentation (TEST-NET-3)
    ([224, 0, 0, 0], 3),     // multicast, reserved (240/4) and broadcast
];

/// Inside global unicast (`2000::/3`), the blocks that are not public, as
/// (network, prefix length). 6to4 (`2002::/16`) is judged by the IPv4
/// address it embeds instead.
const NON_GLOBAL_V6: [(u128, u32); 3] = [
    (0x2001_0000 << 96, 23), // IETF protocol assignments (Teredo, ORCHID, …)
    (0x2001_0db8 << 96, 32), // documentation
    (0x3fff_0000 << 96, 20), // documentation
];
const GLOBAL_UNICAST_V6: (u128, u32) = (0x2000 << 112, 3);
const NAT64_V6: (u128, u32) = (0x0064_ff9b << 96, 96);
const SIX_TO_FOUR_V6: (u128, u32) = (0x2002 << 112, 16);

fn in_block_v4(ip: u32, (network, length): ([u8; 4], u32)) -> bool {
    let mask = u32::MAX.checked_shl(32 - length).unwrap_or(0);
    ip & mask == u32::from_be_bytes(network) & mask
}

fn in_block_v6(ip: u128, (network, length): (u128, u32)) -> bool {
    let mask = u128::MAX.checked_shl(128 - length).unwrap_or(0);
    ip & mask == network & mask
}

fn is_public_ipv4(ip: Ipv4Addr) -> bool {
    let ip = u32::from(ip);
    !NON_GLOBAL_V4.iter().any(|block| in_block_v4(ip, *block))
}

fn is_public_ipv6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_ipv4(v4);
    }
    let bits = u128::from(ip);
    let embedded_v4 = |shift: u32| {
        // The 32 bits at `shift` are the IPv4 address.
        Ipv4Addr::from(u32::try_from((bits >> shift) & u128::from(u32::MAX)).unwrap_or(0))
    };
    // NAT64's well-known prefix: a translator connects to the IPv4 address
    // in the last 32 bits.
    if in_block_v6(bits, NAT64_V6) {
        return is_public_ipv4(embedded_v4(0));
    }
    // 6to4: the IPv4 address follows the 16-bit prefix.
    if in_block_v6(bits, SIX_TO_FOUR_V6) {
        return is_public_ipv4(embedded_v4(80));
    }
    in_block_v6(bits, GLOBAL_UNICAST_V6)
        && !NON_GLOBAL_V6.iter().any(|block| in_block_v6(bits, *block))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn public(text: &str) -> bool {
        is_public_ip(text.parse().unwrap())
    }

    #[test]
    fn internal_and_reserved_addresses_are_not_public() {
        for address in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.5",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.8.9.10",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:db8::1",
            "2002:c0a8:0101::1",
            "3fff::1",
            "fc00::1",
            "fd00::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
        ] {
            assert!(!public(address), "{address} must not count as public");
        }
    }

    #[test]
    fn global_unicast_addresses_are_public() {
        for address in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "192.0.1.1",
            "198.20.0.1",
            "223.255.255.255",
            "::ffff:93.184.216.34",
            "64:ff9b::5db8:d822",
            "2002:5db8:d822::1",
            "2001:4860:4860::8888",
            "2606:4700:4700::1111",
        ] {
            assert!(public(address), "{address} must count as public");
        }
    }

    #[test]
    fn loopback_includes_mapped_addresses() {
        for address in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback_ip(address.parse().unwrap()), "{address}");
        }
        for address in ["10.0.0.1", "::", "93.184.216.34"] {
            assert!(!is_loopback_ip(address.parse().unwrap()), "{address}");
        }
    }
}
