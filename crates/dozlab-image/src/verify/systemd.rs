//! Just enough of systemd's and sshd's configuration model to answer "is this
//! unit enabled", "what does it finally execute" and "what is sshd's
//! effective setting", reading files from an image.

use super::image::Image;

const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
];

/// Where `unit` is enabled: the `.wants`/`.requires` directory holding its link.
pub fn enabled_in(img: &Image, unit: &str) -> Option<String> {
    img.list("/etc/systemd/system")
        .into_iter()
        .filter(|d| d.ends_with(".wants") || d.ends_with(".requires"))
        .find(|d| img.lexists(&format!("/etc/systemd/system/{d}/{unit}")))
}

/// Every unit linked from a `.wants`/`.requires` directory of /etc/systemd/system.
pub fn all_enabled(img: &Image) -> Vec<String> {
    let mut out = Vec::new();
    for d in img.list("/etc/systemd/system") {
        if d.ends_with(".wants") || d.ends_with(".requires") {
            out.extend(img.list(&format!("/etc/systemd/system/{d}")));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The unit file text, first found in /etc, then /lib, then /usr/lib.
pub fn unit_file(img: &Image, unit: &str) -> Option<String> {
    UNIT_DIRS
        .iter()
        .find_map(|d| img.text(&format!("{d}/{unit}")))
}

/// The unit file followed by its drop-ins (ordered by file name, /etc winning a tie).
pub fn unit_with_dropins(img: &Image, unit: &str) -> Option<Vec<String>> {
    let main = unit_file(img, unit)?;
    let mut names: Vec<(String, String)> = Vec::new();
    for d in UNIT_DIRS {
        let dir = format!("{d}/{unit}.d");
        for n in img.list(&dir) {
            if n.ends_with(".conf") && !names.iter().any(|(m, _)| *m == n) {
                names.push((n.clone(), format!("{dir}/{n}")));
            }
        }
    }
    names.sort();
    let mut texts = vec![main];
    texts.extend(names.iter().filter_map(|(_, p)| img.text(p)));
    Some(texts)
}

/// Values of `key` in the `[Service]` section after applying drop-ins
/// (an empty assignment resets the list, as systemd does for ExecStart).
pub fn service_values(texts: &[String], key: &str) -> Vec<String> {
    let mut values = Vec::new();
    for text in texts {
        let mut in_service = false;
        for line in logical_lines(text) {
            let line = line.trim();
            if line.starts_with('[') {
                in_service = line == "[Service]";
                continue;
            }
            if !in_service {
                continue;
            }
            if let Some((k, v)) = line.split_once('=')
                && k.trim() == key
            {
                let v = v.trim();
                if v.is_empty() {
                    values.clear();
                } else {
                    values.push(v.to_string());
                }
            }
        }
    }
    values
}

fn logical_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for raw in text.lines() {
        if raw.trim_start().starts_with(['#', ';']) && cur.is_empty() {
            continue;
        }
        if let Some(stripped) = raw.strip_suffix('\\') {
            cur.push_str(stripped);
            cur.push(' ');
        } else {
            cur.push_str(raw);
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// sshd's effective value of `key` (first occurrence wins, `Include` expanded,
/// stopping at the first `Match` block), or `None` when unset.
pub fn sshd_setting(img: &Image, key: &str) -> Option<String> {
    let text = img.text("/etc/ssh/sshd_config")?;
    sshd_lookup(img, &text, key, 0)
}

fn sshd_lookup(img: &Image, text: &str, key: &str, depth: u8) -> Option<String> {
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.splitn(2, |c: char| c.is_whitespace() || c == '=');
        let k = parts.next().unwrap_or("");
        let v = parts
            .next()
            .unwrap_or("")
            .trim()
            .trim_start_matches('=')
            .trim();
        if k.eq_ignore_ascii_case("Match") {
            return None;
        }
        if k.eq_ignore_ascii_case("Include") && depth < 4 {
            for path in expand_include(img, v) {
                if let Some(inner) = img.text(&path)
                    && let Some(found) = sshd_lookup(img, &inner, key, depth + 1)
                {
                    return Some(found);
                }
            }
        } else if k.eq_ignore_ascii_case(key) {
            return Some(v.to_string());
        }
    }
    None
}

/// Expands `Include` arguments of the form `dir/*.conf` or a plain path.
fn expand_include(img: &Image, arg: &str) -> Vec<String> {
    let mut out = Vec::new();
    for pattern in arg.split_whitespace() {
        let pattern = if pattern.starts_with('/') {
            pattern.to_string()
        } else {
            format!("/etc/ssh/{pattern}")
        };
        match pattern.rsplit_once("/*") {
            Some((dir, suffix)) => {
                for n in img.list(dir) {
                    if n.ends_with(suffix) {
                        out.push(format!("{dir}/{n}"));
                    }
                }
            }
            None => out.push(pattern),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropins_reset_and_replace_execstart() {
        let main =
            "[Unit]\nA=b\n[Service]\nExecStart=/usr/sbin/dockerd -H fd:// \\\n  $DOCKER_OPTS\n"
                .to_string();
        assert_eq!(
            service_values(std::slice::from_ref(&main), "ExecStart"),
            vec!["/usr/sbin/dockerd -H fd://    $DOCKER_OPTS"]
        );
        let drop = "[Service]\nExecStart=\nExecStart=/usr/sbin/dockerd -H tcp://0.0.0.0:2375\n"
            .to_string();
        assert_eq!(
            service_values(&[main, drop], "ExecStart"),
            vec!["/usr/sbin/dockerd -H tcp://0.0.0.0:2375"]
        );
    }
}
