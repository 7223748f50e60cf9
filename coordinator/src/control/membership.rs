//! Who is an authorised member of which network, as one immutable value the relay reads on
//! its packet path without taking the state lock.
//!
//! The state ([`crate::control::state`]) rebuilds it whenever the set of authorised members of any
//! network changes (authorise, deauthorise, delete, join with a token, network deleted)
//! and swaps it in under the state lock, before the change is acknowledged. So a
//! deauthorised member's relayed traffic stops with the very next datagram.
//!
//! Networks are numbered in the order of one build only; nothing outside a [`Membership`]
//! keeps those numbers, so a rebuild may renumber freely.

use std::collections::HashMap;

use mesh_proto::Key;

/// Authorised members and their networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    /// Key → the networks (numbers of this build) it is authorised in, ascending.
    nets: HashMap<Key, Box<[u32]>>,
}

impl Membership {
    /// Builds the index from each network's authorised keys.
    pub fn build<'a, N, K>(networks: N) -> Membership
    where
        N: IntoIterator<Item = K>,
        K: IntoIterator<Item = &'a Key>,
    {
        let mut nets: HashMap<Key, Vec<u32>> = HashMap::new();
        for (i, keys) in (0u32..).zip(networks) {
            for k in keys {
                nets.entry(*k).or_default().push(i);
            }
        }
        Membership {
            nets: nets
                .into_iter()
                .map(|(k, v)| (k, v.into_boxed_slice()))
                .collect(),
        }
    }

    /// Whether `key` is an authorised member of any network.
    pub fn is_member(&self, key: &Key) -> bool {
        self.nets.contains_key(key)
    }

    /// Whether `a` and `b` are both authorised members of one network.
    pub fn share_network(&self, a: &Key, b: &Key) -> bool {
        match (self.nets.get(a), self.nets.get(b)) {
            (Some(x), Some(y)) => x.iter().any(|n| y.binary_search(n).is_ok()),
            _ => false,
        }
    }

    /// Number of distinct authorised keys.
    pub fn len(&self) -> usize {
        self.nets.len()
    }

    /// Whether no one is authorised anywhere.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_networks() {
        let k = |b: u8| Key([b; 32]);
        // Network 0: 1, 2. Network 1: 2, 3. Network 2: nobody.
        let m = Membership::build([vec![k(1), k(2)], vec![k(2), k(3)], vec![]].iter());
        assert_eq!(m.len(), 3);
        assert!(m.is_member(&k(1)) && m.is_member(&k(3)) && !m.is_member(&k(4)));
        assert!(m.share_network(&k(1), &k(2)));
        assert!(m.share_network(&k(3), &k(2)));
        assert!(!m.share_network(&k(1), &k(3)));
        assert!(!m.share_network(&k(1), &k(4)));
        assert!(!m.share_network(&k(4), &k(4)));
        assert!(Membership::default().is_empty());
    }
}
