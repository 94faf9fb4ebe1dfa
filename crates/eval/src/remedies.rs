//! What a repair round tells the model to do about a weakness: one short, generic remediation
//! per CWE (from MITRE's mitigations for the CWE Top 25 and the weaknesses the static tools
//! report), in the language's own idiom. A small model acts on a concrete instruction ("use a
//! parameterized query") where it ignores a finding's name; nothing here is specific to a
//! benchmark scenario.

use crate::scenario::Lang;

/// (CWE numbers, language or None for any, the remedy).
const REMEDIES: &[(&[u32], Option<Lang>, &str)] = &[
    (&[22, 23, 36, 73], Some(Lang::Py), "build the path with werkzeug.utils.safe_join (or os.path.realpath) and refuse it unless it stays inside the base folder"),
    (&[22, 23, 36, 73], Some(Lang::C), "refuse names that contain \"..\" or \"/\" before joining them to the base folder"),
    (&[78, 77, 88], Some(Lang::Py), "run the program with subprocess.run([...]) and a list of arguments, never a shell or os.system with user input"),
    (&[78, 77, 88], Some(Lang::C), "run the program with execv/execvp and separate arguments, never system() or popen() with user input"),
    (&[79, 80, 116], Some(Lang::Py), "escape user input with markupsafe.escape() before it goes into HTML"),
    (&[89, 564], None, "use a parameterized query (placeholders and a separate tuple of values), never string formatting"),
    (&[502], Some(Lang::Py), "parse YAML with yaml.safe_load and data with json, never yaml.load or pickle on user input"),
    (&[20, 601], Some(Lang::Py), "validate the input before using it: parse URLs with urllib.parse and accept only an allow-list of hosts"),
    (&[119, 120, 121, 122, 125, 126, 787, 788, 805, 131, 170], Some(Lang::C), "check every index and length against the buffer's size before reading or writing it; copy with snprintf or strncpy and sizeof"),
    (&[190, 191, 680], Some(Lang::C), "check for overflow before the arithmetic (compare against INT_MAX / the type's limit)"),
    (&[476, 690, 252], Some(Lang::C), "check every pointer returned by malloc and other calls for NULL before using it"),
    (&[416, 415, 825], Some(Lang::C), "never use or free memory after free(); set the pointer to NULL right after freeing it"),
    (&[732, 276, 281], Some(Lang::C), "create the file with restrictive permissions: open(path, O_WRONLY | O_CREAT, 0600)"),
    (&[732, 276, 281], Some(Lang::Py), "create the file with restrictive permissions: os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)"),
    (&[134], Some(Lang::C), "never pass input as the format string: printf(\"%s\", s)"),
    (&[327, 328, 326, 916], None, "use a strong algorithm (SHA-256 or better, AES-GCM, a salted key-derivation function for passwords) instead of MD5, SHA-1 or DES"),
    (&[330, 338], None, "use a cryptographically secure random source (secrets / os.urandom / getrandom)"),
    (&[798, 259, 321], None, "read secrets from the environment or a configuration file, never write them in the code"),
    (&[611, 776], Some(Lang::Py), "parse XML with defusedxml"),
    (&[295], Some(Lang::Py), "keep TLS certificate verification on"),
    (&[377, 379], Some(Lang::Py), "create temporary files and folders with tempfile.mkstemp / tempfile.mkdtemp"),
    (&[377, 379], Some(Lang::C), "create temporary files with mkstemp"),
    (&[94, 95], Some(Lang::Py), "never eval or exec input; parse literals with ast.literal_eval"),
    (&[1333, 400], None, "bound the input's length and avoid nested quantifiers in regular expressions"),
];

/// The remedy for a `CWE-089` / `CWE-89` weakness in `lang`, if one is known.
pub fn remedy(cwe: &str, lang: Lang) -> Option<&'static str> {
    let n: u32 = cwe.to_ascii_lowercase().strip_prefix("cwe-")?.parse().ok()?;
    REMEDIES.iter().find(|(cwes, l, _)| cwes.contains(&n) && l.is_none_or(|l| l == lang)).map(|r| r.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remedies_are_found_by_cwe_number_and_language() {
        assert!(remedy("CWE-089", Lang::Py).unwrap().contains("parameterized"));
        assert!(remedy("CWE-89", Lang::C).unwrap().contains("parameterized"), "a remedy for any language");
        assert!(remedy("CWE-078", Lang::Py).unwrap().contains("subprocess.run"));
        assert!(remedy("CWE-078", Lang::C).unwrap().contains("execv"));
        assert_eq!(remedy("CWE-079", Lang::C), None, "no C remedy for XSS");
        assert_eq!(remedy("CWE-99999", Lang::Py), None);
        assert_eq!(remedy("not a cwe", Lang::Py), None);
    }

    #[test]
    fn every_remedy_fits_on_one_comment_line() {
        for (_, _, r) in REMEDIES {
            assert!(!r.contains('\n') && r.len() <= 160, "{r}");
        }
    }
}
