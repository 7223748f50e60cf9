//! Plain-text tables for listings: an upper-case header row, columns two spaces apart, each
//! as wide as its widest cell, no trailing spaces (what `kubectl get` and `docker ps` print).

/// Renders `rows` under `headers`; every row has `headers.len()` cells.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = width.saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `yes` or `no`.
pub fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|c| (*c).to_owned()).collect()
    }

    #[test]
    fn aligns_columns() {
        let text = render(
            &["NAME", "ADDRESS", "ONLINE"],
            &[
                row(&["web-1", "10.9.8.1", "yes"]),
                row(&["database-primary", "10.9.8.22", "no"]),
            ],
        );
        assert_eq!(
            text,
            "\
NAME              ADDRESS    ONLINE
web-1             10.9.8.1   yes
database-primary  10.9.8.22  no
"
        );
    }

    #[test]
    fn header_only_and_no_trailing_spaces() {
        assert_eq!(render(&["ID", "STATE"], &[]), "ID  STATE\n");
        let text = render(&["A", "B"], &[row(&["x", ""]), row(&["", "y"])]);
        assert_eq!(text, "A  B\nx\n   y\n");
    }

    #[test]
    fn counts_characters_not_bytes() {
        let text = render(&["NAME", "X"], &[row(&["héllo", "1"]), row(&["ab", "2"])]);
        assert_eq!(text, "NAME   X\nhéllo  1\nab     2\n");
    }
}
