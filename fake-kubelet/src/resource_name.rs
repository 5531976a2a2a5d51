//! The kubelet's extended-resource-name rule (Kubernetes `IsExtendedResourceName`):
//! the name contains `/`, does not contain `kubernetes.io/`, does not start with `requests.`,
//! and `requests.<name>` is a qualified name (`<dns-1123-subdomain>/<name of at most 63 chars>`).

const REQUESTS_PREFIX: &str = "requests.";
const NATIVE_DOMAIN: &str = "kubernetes.io/";

/// True when a device plugin may register `name`.
pub fn is_extended_resource_name(name: &str) -> bool {
    // "Native" in the kubelet's sense: unprefixed, or in the kubernetes.io domain (a substring
    // test, as upstream does it).
    if !name.contains('/') || name.contains(NATIVE_DOMAIN) || name.starts_with(REQUESTS_PREFIX) {
        return false;
    }
    is_qualified_name(&format!("{REQUESTS_PREFIX}{name}"))
}

fn is_qualified_name(value: &str) -> bool {
    let (prefix, name) = match value.split_once('/') {
        None => (None, value),
        Some((p, n)) if !n.contains('/') => (Some(p), n),
        Some(_) => return false,
    };
    if let Some(p) = prefix
        && (p.is_empty() || !is_dns1123_subdomain(p))
    {
        return false;
    }
    !name.is_empty() && name.len() <= 63 && is_qualified_name_part(name)
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    let edge_ok = |c: u8| c.is_ascii_alphanumeric();
    let inner_ok = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    match b {
        [] => false,
        [only] => edge_ok(*only),
        [first, mid @ .., last] => {
            edge_ok(*first) && edge_ok(*last) && mid.iter().all(|&c| inner_ok(c))
        }
    }
}

/// At most 253 chars of dot-separated labels `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label_part)
}

fn is_dns1123_label_part(label: &str) -> bool {
    let b = label.as_bytes();
    let edge_ok = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let inner_ok = |c: u8| edge_ok(c) || c == b'-';
    match b {
        [] => false,
        [only] => edge_ok(*only),
        [first, mid @ .., last] => {
            edge_ok(*first) && edge_ok(*last) && mid.iter().all(|&c| inner_ok(c))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_extended_resource_name as ok;

    #[test]
    fn accepts_vendor_domain_names() {
        assert!(ok("hostdev.io/gpu"));
        assert!(ok("nvidia.com/GP102GL_Tesla_P40"));
        assert!(ok("a.b-c.example/x.y_z-1"));
    }

    #[test]
    fn rejects_what_the_kubelet_rejects() {
        for bad in [
            "gpu",                      // no domain
            "kubernetes.io/gpu",        // native domain
            "foo.kubernetes.io/gpu",    // contains kubernetes.io/
            "requests.example.com/gpu", // quota prefix
            "Example.com/gpu",          // uppercase domain
            "example.com/",             // empty name
            "example.com/-gpu",         // name starts with dash
            "example.com/gpu-",         // name ends with dash
            "example.com/a/b",          // two slashes
            "/gpu",                     // empty domain
            "example..com/gpu",         // empty label
            "example.com/gpu du",       // space
        ] {
            assert!(!ok(bad), "{bad} should be rejected");
        }
        assert!(!ok(&format!("example.com/{}", "a".repeat(64))));
        assert!(ok(&format!("example.com/{}", "a".repeat(63))));
        // 9 chars of "requests." count against the 253-char domain limit.
        let label = "a".repeat(61);
        let domain = [label.as_str(); 4].join("."); // 247 chars
        assert!(!ok(&format!("{domain}/x")));
    }
}
