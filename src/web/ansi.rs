//! Script output as a terminal would show it: SGR colours and bold become CSS classes, a carriage return
//! goes back to the start of the line (so progress lines overwrite themselves), and every other escape
//! sequence is dropped. The parsing is `vte`'s, the parser of the alacritty terminal.
//!
//! Styles are classes (`fg-1`, `bg-4`, `b`, ...) rather than inline styles, which the page's
//! Content-Security-Policy forbids.

use serde::Serialize;
use vte::{Params, Parser, Perform};

/// A run of text in one style.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Segment {
    /// Space-separated CSS classes; empty for plain text.
    pub class: String,
    pub text: String,
}

/// The SGR attributes that show on the page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Style {
    /// One of the 16 terminal colours (0-7, bright 8-15).
    fg: Option<u8>,
    bg: Option<u8>,
    bold: bool,
    dim: bool,
    italic: bool,
    underline: bool,
}

impl Style {
    fn class(self) -> String {
        let mut classes = Vec::new();
        if let Some(fg) = self.fg {
            classes.push(format!("fg-{fg}"));
        }
        if let Some(bg) = self.bg {
            classes.push(format!("bg-{bg}"));
        }
        for (on, name) in [
            (self.bold, "b"),
            (self.dim, "dim"),
            (self.italic, "i"),
            (self.underline, "u"),
        ] {
            if on {
                classes.push(name.to_string());
            }
        }
        classes.join(" ")
    }

    /// Applies one SGR sequence's parameters.
    fn apply(&mut self, params: &Params) {
        let mut params = params.iter().map(|param| param.first().copied().unwrap_or(0));
        let mut any = false;
        while let Some(param) = params.next() {
            any = true;
            match param {
                0 => *self = Self::default(),
                1 => self.bold = true,
                2 => self.dim = true,
                3 => self.italic = true,
                4 => self.underline = true,
                22 => (self.bold, self.dim) = (false, false),
                23 => self.italic = false,
                24 => self.underline = false,
                30..=37 => self.fg = Some((param - 30) as u8),
                39 => self.fg = None,
                40..=47 => self.bg = Some((param - 40) as u8),
                49 => self.bg = None,
                90..=97 => self.fg = Some((param - 90 + 8) as u8),
                100..=107 => self.bg = Some((param - 100 + 8) as u8),
                // 256 colours (`38;5;N`): the first 16 are the terminal's; the others are left plain.
                // True colour (`38;2;R;G;B`) is left plain too.
                38 | 48 => {
                    let colour = match params.next() {
                        Some(5) => params.next().filter(|n| *n < 16).map(|n| n as u8),
                        Some(2) => {
                            params.by_ref().take(3).for_each(drop);
                            None
                        }
                        _ => None,
                    };
                    if param == 38 {
                        self.fg = colour;
                    } else {
                        self.bg = colour;
                    }
                }
                _ => {}
            }
        }
        if !any {
            *self = Self::default();
        }
    }
}

/// One line as a terminal draws it: a cell per character (with its style, where one is kept), and the
/// cursor. What both renderings do with carriage returns, backspaces, tabs, erasing and cursor moves.
#[derive(Default)]
struct Line<C> {
    cells: Vec<C>,
    cursor: usize,
}

impl<C: Copy> Line<C> {
    /// Writes `cell` at the cursor and moves on; a gap the cursor jumped over is filled with `blank`.
    fn put(&mut self, cell: C, blank: C) {
        match self.cells.get_mut(self.cursor) {
            Some(existing) => *existing = cell,
            None => {
                self.cells.resize(self.cursor, blank);
                self.cells.push(cell);
            }
        }
        self.cursor += 1;
    }

    /// A control character: a carriage return, a backspace, or a tab (`space` up to the next stop).
    fn execute(&mut self, byte: u8, space: C, blank: C) {
        match byte {
            b'\r' => self.cursor = 0,
            b'\x08' => self.cursor = self.cursor.saturating_sub(1),
            b'\t' => {
                let next = (self.cursor / 8 + 1) * 8;
                while self.cursor < next {
                    self.put(space, blank);
                }
            }
            _ => {}
        }
    }

    /// A CSI sequence that erases or moves the cursor; any other is dropped.
    fn csi(&mut self, params: &Params, intermediates: &[u8], ignore: bool, action: char) {
        if ignore || !intermediates.is_empty() {
            return;
        }
        let first = params
            .iter()
            .next()
            .and_then(|param| param.first().copied())
            .unwrap_or(0);
        match action {
            // Erase in line: from the cursor to the end (0), or the whole line (2).
            'K' => match first {
                0 => self.cells.truncate(self.cursor),
                2 => self.cells.clear(),
                _ => {}
            },
            // Cursor to a column (1-based).
            'G' => self.cursor = usize::from(first.max(1)) - 1,
            _ => {}
        }
    }
}

/// The line with the style of each character.
#[derive(Default)]
struct Screen {
    line: Line<(char, Style)>,
    style: Style,
}

impl Perform for Screen {
    fn print(&mut self, c: char) {
        self.line.put((c, self.style), (' ', Style::default()));
    }

    fn execute(&mut self, byte: u8) {
        self.line
            .execute(byte, (' ', self.style), (' ', Style::default()));
    }

    fn csi_dispatch(&mut self, params: &Params, intermediates: &[u8], ignore: bool, action: char) {
        match action {
            'm' if !ignore && intermediates.is_empty() => self.style.apply(params),
            _ => self.line.csi(params, intermediates, ignore, action),
        }
    }
}

/// `text` (one line) as styled segments.
pub fn render(text: &str) -> Vec<Segment> {
    if !text.contains(['\x1b', '\r', '\x08', '\t']) {
        return vec![Segment {
            class: String::new(),
            text: text.to_string(),
        }];
    }
    let mut screen = Screen::default();
    Parser::new().advance(&mut screen, text.as_bytes());
    let mut segments: Vec<Segment> = Vec::new();
    let mut current: Option<(Style, String)> = None;
    for (c, style) in screen.line.cells {
        match &mut current {
            Some((open, text)) if *open == style => text.push(c),
            _ => {
                if let Some((open, text)) = current.take() {
                    segments.push(Segment {
                        class: open.class(),
                        text,
                    });
                }
                current = Some((style, c.to_string()));
            }
        }
    }
    if let Some((open, text)) = current {
        segments.push(Segment {
            class: open.class(),
            text,
        });
    }
    segments
}

/// `text` (one line) as plain text: no escape sequences, carriage returns applied.
pub fn plain(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    Stripper::default().strip_into(text.as_bytes(), &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Makes lines plain text one after another (the whole log), reusing its buffer: no styles are kept,
/// so a line costs a parse and a copy.
#[derive(Default)]
pub struct Stripper {
    line: Line<char>,
}

impl Stripper {
    /// Appends `line` (bytes as the script wrote them) to `out` without escape sequences, carriage
    /// returns applied; invalid UTF-8 becomes U+FFFD.
    pub fn strip_into(&mut self, line: &[u8], out: &mut Vec<u8>) {
        if !line.iter().any(|b| matches!(b, 0x1b | b'\r' | b'\x08' | b'\t')) {
            out.extend_from_slice(line);
            return;
        }
        self.line.cells.clear();
        self.line.cursor = 0;
        Parser::new().advance(self, line);
        let mut buffer = [0; 4];
        for c in &self.line.cells {
            out.extend_from_slice(c.encode_utf8(&mut buffer).as_bytes());
        }
    }
}

impl Perform for Stripper {
    fn print(&mut self, c: char) {
        self.line.put(c, ' ');
    }

    fn execute(&mut self, byte: u8) {
        self.line.execute(byte, ' ', ' ');
    }

    fn csi_dispatch(&mut self, params: &Params, intermediates: &[u8], ignore: bool, action: char) {
        self.line.csi(params, intermediates, ignore, action);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(class: &str, text: &str) -> Segment {
        Segment {
            class: class.into(),
            text: text.into(),
        }
    }

    #[test]
    fn colours_and_bold_become_classes() {
        assert_eq!(
            render("\x1b[1;31merror:\x1b[0m disk \x1b[92mfull\x1b[39m!"),
            [
                seg("fg-1 b", "error:"),
                seg("", " disk "),
                seg("fg-10", "full"),
                seg("", "!")
            ]
        );
        assert_eq!(render("\x1b[38;5;4mblue\x1b[m"), [seg("fg-4", "blue")]);
        assert_eq!(render("\x1b[38;2;1;2;3mrgb"), [seg("", "rgb")]);
    }

    #[test]
    fn a_carriage_return_rewrites_the_line() {
        assert_eq!(
            plain("Progress: 10%\rProgress: 50%\rProgress: 100%"),
            "Progress: 100%"
        );
        assert_eq!(plain("downloading...\rdone"), "doneloading...");
        assert_eq!(plain("downloading...\r\x1b[Kdone"), "done");
        assert_eq!(plain("plain text"), "plain text");
        assert_eq!(plain("a\x1b]0;title\x07b"), "ab");
    }

    #[test]
    fn tabs_backspaces_column_moves_and_erasing_agree_in_both_renderings() {
        for (line, shown) in [
            ("a\tb", "a       b"),
            ("abc\x08\x08X", "aXc"),
            ("abcdef\x1b[3GX", "abXdef"),
            ("abcdef\x1b[3G\x1b[K", "ab"),
            ("abcdef\x1b[2KX", "      X"),
        ] {
            assert_eq!(plain(line), shown, "{line:?}");
            let texts: String = render(line).into_iter().map(|s| s.text).collect();
            assert_eq!(texts, shown, "{line:?}");
        }
        assert_eq!(
            render("\x1b[31ma\tb"),
            [seg("fg-1", "a       b")],
            "a tab's spaces take the style"
        );
    }

    #[test]
    fn the_stripper_goes_line_after_line_and_leaves_bytes_that_are_not_utf8() {
        let mut stripper = Stripper::default();
        let mut out = Vec::new();
        stripper.strip_into(b"50%\r100% \x1b[1mdone\x1b[0m", &mut out);
        out.push(b'\n');
        stripper.strip_into(b"\x1b[31mbad \xff byte", &mut out);
        out.push(b'\n');
        stripper.strip_into(b"plain \xff stays as written", &mut out);
        out.push(b'\n');
        assert_eq!(
            String::from_utf8_lossy(&out),
            "100% done\nbad \u{fffd} byte\nplain \u{fffd} stays as written\n"
        );
    }
}
