//! Splitting a script into statements at `;`, outside quotes and comments.

/// One statement of a script and the line it starts on (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub line: usize,
    pub text: String,
}

/// Splits `script` into statements. Comments stay in the text (hints such as `/*+ AWAIT */`
/// live in them); pieces holding only whitespace and comments are dropped. An unterminated
/// quote or comment runs to the end, where the parser reports it.
pub fn split_statements(script: &str) -> Vec<Piece> {
    let chars: Vec<char> = script.chars().collect();
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut line = 1;
    let mut start_line: Option<usize> = None;
    let mut i = 0;
    let mut finish = |current: &mut String, start_line: &mut Option<usize>| {
        if let Some(l) = start_line.take() {
            pieces.push(Piece { line: l, text: current.trim().to_string() });
        }
        current.clear();
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '\'' | '"' | '`' => {
                start_line.get_or_insert(line);
                current.push(c);
                i += 1;
                while i < chars.len() {
                    let d = chars[i];
                    current.push(d);
                    if d == '\n' {
                        line += 1;
                    }
                    i += 1;
                    if d == c {
                        // A doubled quote is an escaped quote, not the end.
                        if chars.get(i) == Some(&c) {
                            current.push(c);
                            i += 1;
                            continue;
                        }
                        break;
                    }
                }
                continue;
            }
            '-' if next == Some('-') => {
                while i < chars.len() && chars[i] != '\n' {
                    current.push(chars[i]);
                    i += 1;
                }
                continue;
            }
            '/' if next == Some('*') => {
                current.push_str("/*");
                i += 2;
                while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    current.push(chars[i]);
                    i += 1;
                }
                if i < chars.len() {
                    current.push_str("*/");
                    i += 2;
                }
                continue;
            }
            ';' => {
                finish(&mut current, &mut start_line);
                i += 1;
                continue;
            }
            '\n' => line += 1,
            c if !c.is_whitespace() => {
                start_line.get_or_insert(line);
            }
            _ => {}
        }
        current.push(c);
        i += 1;
    }
    finish(&mut current, &mut start_line);
    pieces
}

/// Whether `text` ends a statement: its last character outside quotes and comments is `;`.
pub fn is_complete(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut last = None;
    while i < chars.len() {
        match (chars[i], chars.get(i + 1).copied()) {
            (q @ ('\'' | '"' | '`'), _) => {
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return false,
                        Some(c) if *c == q && chars.get(i + 1) == Some(&q) => i += 2,
                        Some(c) if *c == q => break,
                        Some(_) => i += 1,
                    }
                }
                last = Some(q);
            }
            ('-', Some('-')) => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            ('/', Some('*')) => {
                i += 2;
                while !(chars.get(i) == Some(&'*') && chars.get(i + 1) == Some(&'/')) {
                    if i >= chars.len() {
                        return false;
                    }
                    i += 1;
                }
                i += 1;
            }
            (c, _) if !c.is_whitespace() => last = Some(c),
            _ => {}
        }
        i += 1;
    }
    last == Some(';')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_outside_quotes_and_comments() {
        let script = "-- a comment; not a statement\nSELECT 'a;b' AS x;\n\n/* multi\nline; */ SELECT \"we;ird\"\n  FROM t;\nSELECT 'it''s;'";
        let pieces = split_statements(script);
        let lines: Vec<usize> = pieces.iter().map(|p| p.line).collect();
        assert_eq!(lines, [2, 5, 7]);
        assert_eq!(pieces[0].text, "-- a comment; not a statement\nSELECT 'a;b' AS x");
        assert!(pieces[1].text.ends_with("SELECT \"we;ird\"\n  FROM t"));
        assert_eq!(pieces[2].text, "SELECT 'it''s;'");
    }

    #[test]
    fn knows_when_a_statement_is_complete() {
        assert!(is_complete("SELECT 1;"));
        assert!(is_complete("SELECT 1; -- done"));
        assert!(!is_complete("SELECT ';'"));
        assert!(!is_complete("SELECT 'open;"));
        assert!(!is_complete("SELECT 1 /* ; */"));
        assert!(!is_complete("SELECT 1\nFROM t"));
    }

    #[test]
    fn comment_only_scripts_have_no_statements() {
        assert!(split_statements("-- nothing\n/* here */\n;\n").is_empty());
    }
}
