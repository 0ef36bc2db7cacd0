//! Field validation. Each function returns the message for a 422 naming the field.

use crate::error::ApiError;

/// A DNS label: what Swarm stacks, services and hostnames accept, so names can be used as they are.
pub fn dns_name(field: &str, value: &str) -> Result<(), ApiError> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_field(
            field,
            "must be 1–63 lowercase letters, digits or dashes, not starting or ending with a dash",
        ))
    }
}

/// A display name: anything printable, 1–100 characters.
pub fn display_name(field: &str, value: &str) -> Result<(), ApiError> {
    let len = value.chars().count();
    if value.trim().is_empty() || len > 100 || value.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(field, "must be 1–100 printable characters"));
    }
    Ok(())
}

pub fn email(field: &str, value: &str) -> Result<(), ApiError> {
    let ok = value.len() <= 254
        && !value.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(value.split_once('@'), Some((local, domain))
            if !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.') && !domain.contains('@'));
    if ok { Ok(()) } else { Err(ApiError::invalid_field(field, "must be an e-mail address")) }
}

pub fn password(field: &str, value: &str) -> Result<(), ApiError> {
    let len = value.chars().count();
    if !(8..=256).contains(&len) {
        return Err(ApiError::invalid_field(field, "must be 8–256 characters"));
    }
    Ok(())
}

/// A DNS-safe slug derived from a display name: `Acme Corp.` → `acme-corp`.
pub fn slugify(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let mut slug: String = slug.trim_end_matches('-').chars().take(50).collect();
    slug = slug.trim_end_matches('-').to_owned();
    if slug.is_empty() { "tenant".to_owned() } else { slug }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_dns_safe() {
        assert_eq!(slugify("Acme Corp."), "acme-corp");
        assert_eq!(slugify("  Team 7 — Ops "), "team-7-ops");
        assert_eq!(slugify("!!!"), "tenant");
        assert!(dns_name("n", &slugify(&"x".repeat(300))).is_ok());
    }

    #[test]
    fn names_and_emails() {
        assert!(dns_name("n", "web-1").is_ok());
        for bad in ["", "-a", "a-", "A", "a_b", &"a".repeat(64)] {
            assert!(dns_name("n", bad).is_err(), "{bad}");
        }
        assert!(email("e", "a@b.co").is_ok());
        for bad in ["a", "a@b", "@b.co", "a b@c.de", "a@.co"] {
            assert!(email("e", bad).is_err(), "{bad}");
        }
    }
}
