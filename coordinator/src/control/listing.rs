//! Paged admin listings (`GET …/members`, `GET …/tokens`, see [`mesh_proto::admin`]):
//! what a page is and which items a filter keeps. Pure: the state core
//! ([`crate::control::state::Coordinator::list_members_page`]) walks its maps with these, the HTTP
//! layer ([`crate::admin::http`]) turns a [`Page`] into a body and its headers.

use std::fmt::Write as _;
use std::net::IpAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use mesh_proto::Key;

/// Longest search text (`q`) accepted.
pub const MAX_SEARCH: usize = 256;

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items, in the listing's order.
    pub items: Vec<T>,
    /// How many items the filter matches over all pages.
    pub total: usize,
    /// Whether more matching items follow the last one.
    pub more: bool,
}

/// Which members a listing keeps.
#[derive(Debug, Clone, Default)]
pub struct MemberFilter {
    /// Only members this search finds.
    pub search: Option<Search>,
    /// Only authorised members (`Some(true)`) or only pending ones (`Some(false)`).
    pub authorized: Option<bool>,
}

impl MemberFilter {
    /// Whether a member with these fields passes.
    pub fn matches(&self, key: &Key, name: &str, address: IpAddr, authorized: bool) -> bool {
        self.authorized.is_none_or(|a| a == authorized)
            && self
                .search
                .as_ref()
                .is_none_or(|s| s.member(key, name, address))
    }
}

/// A case-insensitive substring search. Member names are ASCII (see
/// [`crate::model::validate_member_name`]), as are addresses and base64 keys, so ASCII case
/// folding is all it takes and a match allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    /// The text as given.
    text: String,
    /// The text with base64url's `-`/`_` as standard base64's `+`/`/`, for keys: a key
    /// copied from a URL finds its member too.
    as_key: String,
}

impl Search {
    /// A search for `text`; `None` for an empty one (which finds everything).
    pub fn new(text: &str) -> Option<Search> {
        if text.is_empty() {
            return None;
        }
        let as_key = text.replace('-', "+").replace('_', "/");
        Some(Search {
            text: text.to_owned(),
            as_key,
        })
    }

    /// Whether `hay` contains the search text, ASCII case ignored.
    pub fn finds(&self, hay: &str) -> bool {
        contains_ignore_ascii_case(hay, &self.text)
    }

    /// Whether the member's name, address, fingerprint or base64 key contains the text.
    /// (The fingerprint is the key's first characters, so the key covers it.)
    pub fn member(&self, key: &Key, name: &str, address: IpAddr) -> bool {
        if self.finds(name) {
            return true;
        }
        let mut addr = Buf::new();
        // Writing to a fixed buffer large enough for any address cannot fail.
        let _ = write!(addr, "{address}");
        if self.finds(addr.as_str()) {
            return true;
        }
        let mut b64 = [0u8; 44];
        let n = STANDARD.encode_slice(key.0, &mut b64).unwrap_or(0);
        let b64 = std::str::from_utf8(&b64[..n]).unwrap_or("");
        contains_ignore_ascii_case(b64, &self.text) || contains_ignore_ascii_case(b64, &self.as_key)
    }
}

/// Whether `hay` contains `needle`, ASCII letters compared without case.
fn contains_ignore_ascii_case(hay: &str, needle: &str) -> bool {
    let (hay, needle) = (hay.as_bytes(), needle.as_bytes());
    needle.is_empty()
        || hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// A small stack buffer for formatting an address (at most 45 characters for IPv6).
struct Buf {
    bytes: [u8; 64],
    len: usize,
}

impl Buf {
    fn new() -> Buf {
        Buf {
            bytes: [0; 64],
            len: 0,
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for Buf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dst = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn search_is_a_case_insensitive_substring() {
        let key: Key = "m9OJrAFVwqGa+bJFZnZX5+JZChdEygr56p86FYJdDjs="
            .parse()
            .unwrap();
        let addr: IpAddr = "10.9.8.17".parse().unwrap();
        let v6: IpAddr = "fd00:ab::1:2".parse().unwrap();
        let finds = |q: &str| Search::new(q).unwrap().member(&key, "Web-Frontend.7", addr);
        // Name, address, fingerprint, key, in any case.
        for q in [
            "web",
            "FRONTEND",
            "d.7",
            "10.9.8",
            ".17",
            "m9ojrafv",
            "M9OJ",
            "wqGa+bJF",
            "Djs=",
            // The key in base64url.
            "wqGa-bJF",
            "m9OJrAFVwqGa-bJFZnZX5-JZChdEygr56p86FYJdDjs",
        ] {
            assert!(finds(q), "{q}");
        }
        for q in ["webx", "10.9.8.18", "m9OJrAFW", "é", "Web-Frontend.7 ", "%"] {
            assert!(!finds(q), "{q}");
        }
        assert!(Search::new("AB::1").unwrap().member(&key, "x", v6));
        assert!(Search::new("").is_none());
        // A search longer than anything it is compared with finds nothing (and is cheap).
        assert!(!finds(&"a".repeat(MAX_SEARCH)));
    }

    #[test]
    fn filters_combine_status_and_search() {
        let key = Key([7; 32]);
        let addr: IpAddr = "10.9.8.2".parse().unwrap();
        let all = MemberFilter::default();
        assert!(all.matches(&key, "a", addr, true) && all.matches(&key, "a", addr, false));
        let pending = MemberFilter {
            search: Search::new("db"),
            authorized: Some(false),
        };
        assert!(pending.matches(&key, "db-1", addr, false));
        assert!(!pending.matches(&key, "db-1", addr, true));
        assert!(!pending.matches(&key, "web-1", addr, false));
    }

    #[test]
    fn every_address_fits_the_buffer() {
        let mut b = Buf::new();
        let long: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .unwrap();
        write!(b, "{long}").unwrap();
        assert_eq!(b.as_str(), long.to_string());
    }
}
