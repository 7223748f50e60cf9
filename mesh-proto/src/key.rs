//! WireGuard keys as 32 raw bytes with WireGuard's text form: standard base64 with
//! padding, 44 characters (the format of `wg genkey`, `wg pubkey` and `wg show`).

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// A 32-byte Curve25519 key (public or private) or preshared key.
///
/// `Debug` and [`Key::fingerprint`] print only the first 8 characters of the base64 form,
/// so logging a key never leaks a private key in full.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub [u8; 32]);

/// Why a string is not a WireGuard key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not 44 characters of base64 ending in `=`.
    #[error("expected 44 base64 characters, got {0}")]
    Length(usize),
    /// Characters outside the base64 alphabet, or bad padding.
    #[error("not valid base64")]
    Base64,
}

impl Key {
    /// The full base64 text form. Use [`Key::fingerprint`] in logs.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// A short, non-secret-revealing prefix for logs and status output of public keys.
    pub fn fingerprint(&self) -> String {
        let mut s = self.to_base64();
        s.truncate(8);
        s
    }

    /// The public key of this private key (what `wg pubkey` prints). Pure arithmetic
    /// on Curve25519; x25519-dalek clamps the scalar itself.
    pub fn public_key(&self) -> Key {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        Key(x25519_dalek::PublicKey::from(&secret).to_bytes())
    }

    /// Clamps a random 32-byte string into a Curve25519 private key, exactly as
    /// `wg genkey` does (RFC 7748 section 5).
    pub fn clamp_private(mut bytes: [u8; 32]) -> Key {
        bytes[0] &= 248;
        bytes[31] &= 127;
        bytes[31] |= 64;
        Key(bytes)
    }
}

impl FromStr for Key {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Key, KeyError> {
        let s = s.trim();
        if s.len() != 44 {
            return Err(KeyError::Length(s.len()));
        }
        let mut out = [0u8; 32];
        // A 44-character string decodes to at most 33 bytes; decode into a buffer that
        // cannot overflow and insist on exactly 32.
        let mut buf = [0u8; 33];
        let n = STANDARD
            .decode_slice(s.as_bytes(), &mut buf)
            .map_err(|_| KeyError::Base64)?;
        if n != 32 {
            return Err(KeyError::Base64);
        }
        out.copy_from_slice(&buf[..32]);
        Ok(Key(out))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({}…)", self.fingerprint())
    }
}

impl serde::Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_wg_format() {
        // A key printed by `wg genkey`.
        let text = "YAnz3XDmxkRPCT3P+LLYHC2ZhPL9LDJOQXUfTpM9Im0=";
        let key: Key = text.parse().unwrap();
        assert_eq!(key.to_base64(), text);
        assert_eq!(key.fingerprint(), "YAnz3XDm");
        assert_eq!(format!("{key:?}"), "Key(YAnz3XDm…)");
    }

    #[test]
    fn public_key_matches_wg_pubkey() {
        // `echo YAnz3XDmxkRPCT3P+LLYHC2ZhPL9LDJOQXUfTpM9Im0= | wg pubkey`
        let private: Key = "YAnz3XDmxkRPCT3P+LLYHC2ZhPL9LDJOQXUfTpM9Im0="
            .parse()
            .unwrap();
        assert_eq!(
            private.public_key().to_base64(),
            "m9OJrAFVwqGa+bJFZnZX5+JZChdEygr56p86FYJdDjs="
        );
    }

    #[test]
    fn rejects_bad_keys() {
        assert_eq!("abc".parse::<Key>(), Err(KeyError::Length(3)));
        assert_eq!(
            "!Anz3XDmxkRPCT3P+LLYHC2ZhPL9LDJOQXUfTpM9Im0=".parse::<Key>(),
            Err(KeyError::Base64)
        );
        // 44 characters but 33 bytes of payload (no padding).
        assert_eq!(
            "YAnz3XDmxkRPCT3P+LLYHC2ZhPL9LDJOQXUfTpM9Im0A".parse::<Key>(),
            Err(KeyError::Base64)
        );
    }

    #[test]
    fn clamps_like_wg_genkey() {
        let k = Key::clamp_private([0xff; 32]);
        assert_eq!(k.0[0], 0xf8);
        assert_eq!(k.0[31], 0x7f);
        let k = Key::clamp_private([0; 32]);
        assert_eq!(k.0[31], 0x40);
    }
}
