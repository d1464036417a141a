//! What a new password must be (NIST 800-63B): 8 to 128 characters, and not one of the
//! passwords attackers try first. No composition rules.

/// Why a new password was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordPolicyError {
    #[error("must be 8 to 128 characters")]
    Length,
    #[error("is too common; choose another")]
    Common,
    #[error("must not contain the username")]
    ContainsUsername,
}

/// The most common passwords of public breach corpora, lower-cased.
const COMMON: &[&str] = &[
    "password",
    "password1",
    "password12",
    "password123",
    "password1234",
    "passw0rd",
    "p@ssw0rd",
    "p@ssword",
    "12345678",
    "123456789",
    "1234567890",
    "12341234",
    "11111111",
    "00000000",
    "87654321",
    "88888888",
    "qwertyui",
    "qwertyuiop",
    "qwerty123",
    "qwerty12",
    "1q2w3e4r",
    "1q2w3e4r5t",
    "1qaz2wsx",
    "zaq12wsx",
    "asdfghjk",
    "asdfghjkl",
    "iloveyou",
    "iloveyou1",
    "sunshine",
    "princess",
    "football",
    "baseball",
    "welcome1",
    "welcome123",
    "trustno1",
    "superman",
    "starwars",
    "whatever",
    "dragon123",
    "monkey123",
    "letmein1",
    "letmein123",
    "abc12345",
    "abcd1234",
    "abcdefgh",
    "changeme",
    "computer",
    "internet",
    "master123",
    "michelle",
    "jennifer",
    "123qweasd",
    "qweasdzxc",
    "aa123456",
    "admin123",
    "administrator",
    "secret123",
    "shadow123",
    "1234qwer",
    "q1w2e3r4",
    "q1w2e3r4t5",
    "pokemon1",
    "samsung1",
    "liverpool",
    "chelsea1",
    "charlie1",
    "freedom1",
    "hello123",
    "loveyou1",
    "mustang1",
    "matrix123",
    "azerty123",
];

/// Checks a new password against the policy.
pub fn check_new_password(password: &str, username: &str) -> Result<(), PasswordPolicyError> {
    let chars = password.chars().count();
    if !(8..=128).contains(&chars) {
        return Err(PasswordPolicyError::Length);
    }
    let lowered = password.to_lowercase();
    if COMMON.contains(&lowered.as_str()) {
        return Err(PasswordPolicyError::Common);
    }
    if username.len() >= 3 && lowered.contains(&username.to_lowercase()) {
        return Err(PasswordPolicyError::ContainsUsername);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_is_counted_in_characters() {
        assert_eq!(
            check_new_password("short", "bob"),
            Err(PasswordPolicyError::Length)
        );
        assert_eq!(
            check_new_password(&"x".repeat(129), "bob"),
            Err(PasswordPolicyError::Length)
        );
        assert!(
            check_new_password("ééééééééé", "bob").is_ok(),
            "9 characters, 18 bytes"
        );
        assert!(
            check_new_password(&"é".repeat(128), "bob").is_ok(),
            "128 characters, 256 bytes"
        );
    }

    #[test]
    fn common_passwords_and_the_username_are_refused() {
        assert_eq!(
            check_new_password("Password123", "bob"),
            Err(PasswordPolicyError::Common)
        );
        assert_eq!(
            check_new_password("alice-rules-2026", "alice"),
            Err(PasswordPolicyError::ContainsUsername)
        );
        assert!(check_new_password("correct horse battery staple", "alice").is_ok());
    }
}
