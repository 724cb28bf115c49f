//! Input rules shared by every resource: names, emails, descriptions. Each failure names the
//! field, so a client can point at it.

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

pub const NAME_MAX: usize = 100;
pub const DESCRIPTION_MAX: usize = 1000;
pub const EMAIL_MAX: usize = 254;

/// A display name: at most `max` characters as sent, trimmed, not empty, no control characters.
pub fn text(field: &str, value: &str, max: usize) -> Result<String, Invalid> {
    // The limit is on what was sent, as the API's schema states it (`maxLength`): surrounding
    // spaces count, though they are not kept.
    if value.chars().count() > max {
        return Err(Invalid::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    let value = value.trim();
    if value.is_empty() {
        return Err(Invalid::new(field, "must not be empty"));
    }
    if value.chars().any(char::is_control) {
        return Err(Invalid::new(field, "must not contain control characters"));
    }
    Ok(value.to_owned())
}

pub fn name(field: &str, value: &str) -> Result<String, Invalid> {
    text(field, value, NAME_MAX)
}

/// An email address: trimmed, one `@` with something on each side, a dot in the domain, no spaces
/// or control characters. Deliverability is not keygate's to judge.
pub fn email(field: &str, value: &str) -> Result<String, Invalid> {
    let value = value.trim();
    let invalid = || Invalid::new(field, "must be an email address such as ada@example.com");
    if value.is_empty() || value.len() > EMAIL_MAX {
        return Err(invalid());
    }
    if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid());
    }
    match value.split_once('@') {
        Some((local, domain))
            if !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.') =>
        {
            Ok(value.to_owned())
        }
        _ => Err(invalid()),
    }
}

/// A role narrowed by a list of `permissions`: the list is left out, or holds at least one
/// pattern the catalog knows; each bad one is named (`permissions[2]`).
pub fn narrowing(errors: &mut Errors, catalog: &crate::permission::Catalog, patterns: &[String]) {
    if patterns.is_empty() {
        errors.push(
            "permissions",
            "must list at least one permission, or be left out",
        );
    }
    for (i, pattern) in patterns.iter().enumerate() {
        if let Err(e) = catalog.check_pattern(pattern) {
            errors.push(format!("permissions[{i}]"), e.to_string());
        }
    }
}

/// An optional `description`, trimmed and bounded.
pub fn description(errors: &mut Errors, value: Option<&str>) -> Option<String> {
    value.and_then(|d| errors.check(text("description", d, DESCRIPTION_MAX)))
}

/// Collects the errors of several checks so a request hears about all its bad fields at once.
#[derive(Debug, Default)]
pub struct Errors(pub Vec<Invalid>);

impl Errors {
    /// The value, or `None` after recording why not.
    pub fn check<T>(&mut self, result: Result<T, Invalid>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(invalid) => {
                self.0.push(invalid);
                None
            }
        }
    }

    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Invalid::new(field, message));
    }

    pub fn into_result(self) -> Result<(), Vec<Invalid>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(name("name", "  CI deploy ").unwrap(), "CI deploy");
        assert!(name("name", "   ").is_err());
        assert!(name("name", "bell\u{7}").is_err());
        assert!(name("name", &"x".repeat(NAME_MAX + 1)).is_err());
        assert!(
            name("name", &format!(" {} ", "x".repeat(NAME_MAX - 1))).is_err(),
            "the limit is on what was sent, spaces and all"
        );
        assert!(
            name("name", &"é".repeat(NAME_MAX)).is_ok(),
            "characters, not bytes"
        );
    }

    #[test]
    fn emails_have_a_plausible_shape() {
        assert_eq!(
            email("email", " Ada@Example.com ").unwrap(),
            "Ada@Example.com"
        );
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "a b@example.com",
            "ada@@example.com",
            "ada@.example.com",
            "ada@example.com.",
            "ada@exa\nmple.com",
        ] {
            assert!(email("email", bad).is_err(), "{bad:?}");
        }
        let error = email("first_user.email", "nope").unwrap_err();
        assert_eq!(error.field, "first_user.email");
    }
}
