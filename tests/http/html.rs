//! Reading the pages authrun serves, as a person would read them: the flash message, the text of an
//! element, a table's body, the form's CSRF token, text with its character references decoded.

/// The flash message on a page: its kind (`success`/`error`, from the `flash-KIND` class) and its text.
pub fn flash(page: &str) -> Option<(String, String)> {
    let start = page.find("id=\"flash\"")?;
    let element = &page[page[..start].rfind('<')?..];
    let open_end = element.find('>')?;
    let kind = element[..open_end]
        .split(['"', ' '])
        .find_map(|class| class.strip_prefix("flash-"))?
        .to_string();
    let text = &element[open_end + 1..element.find("</p>")?];
    Some((kind, text.trim().to_string()))
}

/// The text of the first element with class `class`, up to its first child tag.
pub fn text_of_class<'a>(page: &'a str, class: &str) -> Option<&'a str> {
    text_of_element(page, &format!("class=\"{class}\""))
}

/// The text of the element with `id`, up to its first child tag.
pub fn text_of_id<'a>(page: &'a str, id: &str) -> Option<&'a str> {
    text_of_element(page, &format!("id=\"{id}\""))
}

/// The text of the first element whose opening tag holds `attribute`, up to its first child tag.
fn text_of_element<'a>(page: &'a str, attribute: &str) -> Option<&'a str> {
    let at = page.find(attribute)?;
    let rest = &page[at..];
    let text = &rest[rest.find('>')? + 1..];
    Some(text[..text.find('<')?].trim())
}

/// What the page's first `<tbody>` holds: empty without one (or when it is not closed).
pub fn table_body(page: &str) -> &str {
    let Some(start) = page.find("<tbody>") else {
        return "";
    };
    &page[start..start + page[start..].find("</tbody>").unwrap_or(0)]
}

/// The value of the page's hidden `csrf` input.
pub fn csrf_input(page: &str) -> Option<String> {
    let at = page.find("name=\"csrf\"")?;
    let tag_start = page[..at].rfind('<')?;
    let tag = &page[tag_start..tag_start + page[tag_start..].find('>')?];
    let value = &tag[tag.find("value=\"")? + "value=\"".len()..];
    Some(value[..value.find('"')?].to_string())
}

/// Decodes the character references a template escaper writes.
pub fn unescape_html(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.find(';') else { break };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|dec| dec.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}
