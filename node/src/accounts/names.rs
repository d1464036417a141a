//! Account names, parsed rather than validated: a [`Username`] or [`Email`] value is
//! always normalized and legal, and [`LoginName`] is the key of the login-name index.

use std::fmt;

/// Why a name was refused; the message is shown to the client next to the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must be 3 to 32 characters of a-z, 0-9 and _")]
    BadUsername,
    #[error("must be a valid email address of at most 254 characters")]
    BadEmail,
}

/// A username: 3..=32 of `[a-z0-9_]` after lower-casing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    /// Lower-cases and checks a username.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let name = raw.to_lowercase();
        let ok = (3..=32).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Ok(Self(name))
        } else {
            Err(NameError::BadUsername)
        }
    }

    /// The normalized name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An email address, compared case-insensitively (stored lower-cased and trimmed).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Trims, lower-cases and checks an address: one `@`, a non-empty local part of at
    /// most 64 characters, a dotted domain of letters, digits, `-` and `.`, no spaces or
    /// control characters, 254 characters at most (RFC 5321).
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let email = raw.trim().to_lowercase();
        let Some((local, domain)) = email.split_once('@') else {
            return Err(NameError::BadEmail);
        };
        let local_ok = (1..=64).contains(&local.len())
            && local
                .chars()
                .all(|c| !c.is_whitespace() && !c.is_control() && !"<>()[]\\,;:@\"".contains(c));
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|l| {
                (1..=63).contains(&l.len())
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        if email.len() <= 254 && local_ok && domain_ok {
            Ok(Self(email))
        } else {
            Err(NameError::BadEmail)
        }
    }

    /// The normalized address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A key of the login-name index: `username:<name>` or `email:<address>`. The index is
/// sharded by the route hash of this text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LoginName(String);

impl LoginName {
    /// The index key of a username.
    pub fn of_username(name: &Username) -> Self {
        Self(format!("username:{}", name.as_str()))
    }

    /// The index key of an email address.
    pub fn of_email(email: &Email) -> Self {
        Self(format!("email:{}", email.as_str()))
    }

    /// What a client typed to log in: an email when it has an `@`, else a username.
    /// `None` when it can be neither (so no lookup is needed to refuse it).
    pub fn of_login(raw: &str) -> Option<Self> {
        if raw.contains('@') {
            Email::parse(raw).ok().map(|e| Self::of_email(&e))
        } else {
            Username::parse(raw).ok().map(|u| Self::of_username(&u))
        }
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LoginName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_lowercased_and_limited_to_safe_characters() {
        assert_eq!(Username::parse("Alice_01").unwrap().as_str(), "alice_01");
        for bad in [
            "ab",
            &"a".repeat(33),
            "al ice",
            "alice'--",
            "bob;drop table users",
            "émile",
            "a-b",
        ] {
            assert_eq!(Username::parse(bad), Err(NameError::BadUsername), "{bad:?}");
        }
    }

    #[test]
    fn emails_are_trimmed_lowercased_and_checked() {
        assert_eq!(
            Email::parse("  Alice@Example.COM ").unwrap().as_str(),
            "alice@example.com"
        );
        assert!(Email::parse("a.b+tag@sub.example.org").is_ok());
        for bad in [
            "",
            "alice",
            "alice@",
            "@example.com",
            "a@b",
            "a b@example.com",
            "a@-x.com",
            "a@@b.com",
        ] {
            assert_eq!(Email::parse(bad), Err(NameError::BadEmail), "{bad:?}");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn a_login_is_an_email_when_it_has_an_at_sign() {
        assert_eq!(
            LoginName::of_login("Alice").unwrap().as_str(),
            "username:alice"
        );
        assert_eq!(
            LoginName::of_login("Alice@Example.com").unwrap().as_str(),
            "email:alice@example.com"
        );
        assert_eq!(LoginName::of_login("x"), None);
    }
}
