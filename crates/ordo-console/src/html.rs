//! HTML by hand: escaping, and the layout every page shares (a skip link, a navigation
//! landmark, one `main`, a stylesheet readable on a laptop screen, no script needed).

use std::fmt::Write;

/// `text` escaped for HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` escaped for one path segment of a URL (stream keys hold anything).
pub fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            other => {
                let _ = write!(out, "%{other:02X}");
            }
        }
    }
    out
}

/// An age in the shortest unit that reads well.
pub fn age(now_ms: u64, at_ms: Option<u64>) -> String {
    let Some(at_ms) = at_ms else {
        return "–".into();
    };
    let s = now_ms.saturating_sub(at_ms) / 1000;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

const STYLE: &str = "
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1b1b1b;background:#fafafa}
a{color:#0b57d0}a:focus,button:focus,input:focus,select:focus{outline:3px solid #f9a825;outline-offset:1px}
.skip{position:absolute;left:-999px}.skip:focus{left:8px;top:8px;background:#fff;padding:4px}
header{background:#20232a;color:#fff;padding:8px 16px;display:flex;gap:24px;align-items:center}
header a{color:#fff}nav ul{list-style:none;display:flex;gap:16px;margin:0;padding:0}
main{padding:16px;max-width:1200px}table{border-collapse:collapse;width:100%;margin:8px 0 20px;background:#fff}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
caption{text-align:left;font-weight:600;padding:4px 0}
.num{font-variant-numeric:tabular-nums}td:has(> .num){text-align:right}
.bad{color:#b3261e;font-weight:600}.ok{color:#146c2e;font-weight:600}
pre{background:#fff;border:1px solid #ddd;padding:8px;overflow:auto;max-height:24em}
form.filters{display:flex;gap:12px;flex-wrap:wrap;align-items:end;margin:8px 0}
label{display:flex;flex-direction:column;font-size:13px}
form.act{border:1px solid #ddd;background:#fff;padding:8px 12px;margin:8px 0;display:flex;flex-direction:column;gap:6px;align-items:start}
label.pick{flex-direction:row;gap:4px;align-items:center}
form.act label{width:100%}form.act input,form.act textarea{width:100%;box-sizing:border-box}
";

/// A whole page: `title` in the tab and as the heading, `body` inside `main`.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · ordo console</title><style>{STYLE}</style></head><body>\
         <a class=\"skip\" href=\"#main\">Skip to the content</a>\
         <header><strong>ordo console</strong><nav aria-label=\"Pages\"><ul>\
         <li><a href=\"/\">Overview</a></li><li><a href=\"/waiting\">Waiting</a></li>\
         <li><a href=\"/dead-letters\">Dead letters</a></li><li><a href=\"/journal\">Journal</a></li>\
         </ul></nav></header><main id=\"main\"><h1>{title}</h1>{body}</main></body></html>",
        title = escape(title),
    )
}

/// A table: a caption, column heads, and rows of cells already rendered as HTML.
pub fn table(caption: &str, heads: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("<table><caption>{}</caption><thead><tr>", escape(caption));
    for head in heads {
        let _ = write!(out, "<th scope=\"col\">{}</th>", escape(head));
    }
    out.push_str("</tr></thead><tbody>");
    if rows.is_empty() {
        let _ = write!(out, "<tr><td colspan=\"{}\">none</td></tr>", heads.len());
    }
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// A link to a stream's page.
pub fn stream_link(stream: &str) -> String {
    format!(
        "<a href=\"/streams/{}\">{}</a>",
        path_segment(stream),
        escape(stream)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_urls_in_data_are_escaped() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(path_segment("customer 1/é?"), "customer%201%2F%C3%A9%3F");
        assert_eq!(stream_link("a<b"), "<a href=\"/streams/a%3Cb\">a&lt;b</a>");
    }
}
