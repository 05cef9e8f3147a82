//! docs/cli.md, made from the real `--help` of every command (`ferry docs > docs/cli.md`); a
//! test fails when the file in the tree is not what this prints.

use clap::Command;

pub fn markdown(root: &mut Command) -> String {
    root.build();
    let mut out = String::from(
        "# CLI reference\n\n\
         Generated from `ferry --help` and every subcommand's `--help` by `ferry docs > docs/cli.md`;\n\
         a test fails when this file is stale. A tour is in the [README](../README.md).\n\n",
    );
    out.push_str(EXIT_CODES);
    walk(root, &mut Vec::new(), &mut out);
    out
}

const EXIT_CODES: &str = "\
## Exit codes

| code | meaning |
|---|---|
| 0 | done; with `--wait`, the task completed |
| 1 | the host refused or the operation failed; with `--wait`, the task's own non-zero exit code (1 when it ended without one: killed, lost, timed out) |
| 2 | usage: a bad flag or argument (nothing was sent) |
| 3 | not found (task, VPS, node, user, file) |
| 4 | not signed in (`ferry login`), or not allowed |
| 5 | the host cannot be reached |

";

fn walk(cmd: &Command, path: &mut Vec<String>, out: &mut String) {
    if cmd.is_hide_set() {
        return;
    }
    path.push(cmd.get_name().to_string());
    let title = path.join(" ");
    let level = "#".repeat((path.len() + 1).min(4));
    let help = cmd.clone().render_long_help().to_string();
    out.push_str(&format!(
        "{level} `{title}`\n\n```text\n{}\n```\n\n",
        help.trim_end()
    ));
    for sub in cmd.get_subcommands() {
        if sub.get_name() != "help" {
            walk(sub, path, out);
        }
    }
    path.pop();
}
