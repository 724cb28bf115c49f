//! The console templates' own filters: askama looks a template's `|name` up as `filters::name`
//! where the template is derived, so a module with such templates imports this one.

use std::fmt::Display;

use askama::filters::Safe;

/// Text keygate writes for people, as HTML: escaped, and each part quoted in backticks (a name,
/// an id, a field, as the API's problem details quote them) set as code instead of showing its
/// backticks. A lone backtick, or two with nothing between, stays as it is.
#[askama::filter_fn]
pub(super) fn prose<T: Display>(text: T, _: &dyn askama::Values) -> askama::Result<Safe<String>> {
    Ok(Safe(prose_html(&text.to_string())))
}

fn prose_html(text: &str) -> String {
    let mut html = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(open) = rest.find('`') {
        let Some(length) = rest[open + 1..].find('`') else {
            break;
        };
        escape_into(&mut html, &rest[..open]);
        if length == 0 {
            html.push_str("``");
        } else {
            html.push_str("<code>");
            escape_into(&mut html, &rest[open + 1..open + 1 + length]);
            html.push_str("</code>");
        }
        rest = &rest[open + length + 2..];
    }
    escape_into(&mut html, rest);
    html
}

fn escape_into(html: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => html.push_str("&amp;"),
            '<' => html.push_str("&lt;"),
            '>' => html.push_str("&gt;"),
            '"' => html.push_str("&quot;"),
            '\'' => html.push_str("&#39;"),
            c => html.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::prose_html;

    #[test]
    fn quoted_parts_are_code_and_everything_is_escaped() {
        assert_eq!(
            prose_html("token `kg_1` is already revoked"),
            "token <code>kg_1</code> is already revoked"
        );
        assert_eq!(
            prose_html("`a<b>` & `\"c'`"),
            "<code>a&lt;b&gt;</code> &amp; <code>&quot;c&#39;</code>"
        );
        assert_eq!(
            prose_html("<script>alert(1)</script>"),
            "&lt;script&gt;alert(1)&lt;/script&gt;"
        );
        assert_eq!(prose_html("one ` alone"), "one ` alone");
        assert_eq!(
            prose_html("`x` and a lone ` <i>"),
            "<code>x</code> and a lone ` &lt;i&gt;"
        );
        assert_eq!(prose_html("``"), "``");
        assert_eq!(prose_html("```a``"), "``<code>a</code>`");
        assert_eq!(prose_html("é `ü`"), "é <code>ü</code>");
    }
}
