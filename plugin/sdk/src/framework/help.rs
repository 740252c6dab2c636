//! Help text in the layout `path-help` users know.

use std::fmt::Write as _;

use super::Path;

/// Help for one path.
pub(super) fn path_help(request_path: &str, path: &Path) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Request:        {request_path}");
    let _ = writeln!(out, "Matching Route: ^{}$", path.pattern);
    let _ = writeln!(out);
    let _ = writeln!(out, "{}", path.synopsis);
    if !path.fields.is_empty() {
        let _ = writeln!(out, "\n## PARAMETERS\n");
        for field in &path.fields {
            let _ = writeln!(out, "{} ({})", field.name, field.kind.name());
            let _ = writeln!(out, "{}", indent(field.description));
            if let Some(default) = &field.default {
                let _ = writeln!(out, "    Default: {default}");
            }
            let _ = writeln!(out);
        }
    }
    if !path.operations.is_empty() {
        let _ = writeln!(out, "## OPERATIONS\n");
        for op in &path.operations {
            let _ = writeln!(out, "{:<8} {}", op.operation.as_str(), op.summary);
        }
    }
    if !path.description.is_empty() {
        let _ = writeln!(out, "\n## DESCRIPTION\n\n{}", path.description.trim());
    }
    out
}

/// Help for the mount: the engine's text and its paths.
pub(super) fn backend_help(help: &str, paths: &[Path]) -> String {
    let mut out = format!("{}\n\n## PATHS\n\n", help.trim());
    for path in paths {
        let _ = writeln!(out, "    ^{}$\n        {}\n", path.pattern, path.synopsis);
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("    {line}")).collect::<Vec<_>>().join("\n")
}
