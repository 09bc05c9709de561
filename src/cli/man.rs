//! Man pages, generated from each role's option list and the prose in `man_text`.
//! `make man` writes them into `man/`; a test fails when a page there differs from
//! what this produces, so a changed option cannot ship with a stale page.

use super::man_text::{role_sections, COMMON_SECTIONS};
use super::options::{self, Kind, OptionList};
use super::{Role, VERSION};

/// Escapes text for roff: backslashes and leading dots or quotes.
pub fn esc(text: &str) -> String {
    let t = text.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with(['.', '\'']) {
        format!("\\&{t}")
    } else {
        t
    }
}

fn header(name: &str, summary: &str) -> String {
    format!(
        ".TH {} 1 \"\" \"kumo {VERSION}\" \"kumo manual\"\n.SH NAME\n{} \\- {}\n",
        name.to_uppercase(),
        esc(name),
        esc(summary)
    )
}

/// The man page of a role.
pub fn page(role: Role, list: OptionList) -> String {
    let mut s = header(role.program(), role.summary());
    s += ".SH SYNOPSIS\n";
    s += &format!("\\fB{}\\fR", esc(role.program()));
    for o in options::each(list).filter(|o| o.required) {
        s += &format!(
            " \\fB\\-{}\\fR \\fI{}\\fR",
            esc(o.short.unwrap_or(o.long)),
            esc(o.kind.placeholder())
        );
    }
    s += " [\\fIoptions\\fR]";
    if !role.positional_usage().is_empty() {
        s += &format!(" {}", esc(role.positional_usage()));
    }
    s += "\n.br\n";
    s += &format!("\\fBkumo {}\\fR ...\n", esc(role.subcommand()));
    s += role_sections(role);
    s += ".SH OPTIONS\n";
    for o in options::each(list) {
        s += ".TP\n";
        if let Some(sh) = o.short {
            s += &format!("\\fB\\-{}\\fR, ", esc(sh));
        }
        s += &format!("\\fB\\-\\-{}\\fR", esc(o.long));
        if o.kind != Kind::Switch {
            s += &format!(" \\fI{}\\fR", esc(o.kind.placeholder()));
        }
        s += "\n";
        s += &esc(o.help);
        if o.kind != Kind::Switch {
            s += &format!(" Expects {}.", esc(&o.kind.expected()));
        }
        if o.required {
            s += " Required.";
        }
        if let Some(d) = o.default {
            s += &format!(" Default: {}.", esc(d));
        }
        s += "\n";
    }
    if options::each(list).any(|o| o.short == Some("h")) {
        s += ".TP\n\\fB\\-\\-help\\fR\nPrint the options and exit.\n";
    } else {
        s += ".TP\n\\fB\\-h\\fR, \\fB\\-\\-help\\fR\nPrint the options and exit.\n";
    }
    if !role.commands().is_empty() {
        s += ".SH COMMANDS\n";
        for (name, text) in role.commands() {
            s += &format!(".TP\n\\fB{}\\fR\n{}\n", esc(name), esc(text));
        }
    }
    s += ".TP\n\\fB\\-\\-version\\fR\nPrint the version and exit.\n";
    s += COMMON_SECTIONS;
    s += ".SH SEE ALSO\n\\fBkumo\\fR(1)\n";
    s
}

/// kumo(1): the multicall binary itself.
pub fn kumo_page() -> String {
    let mut s = header(
        "kumo",
        "a distributed key\u{2011}value store speaking the memcached protocol",
    );
    s += ".SH SYNOPSIS\n\\fBkumo\\fR \\fIROLE\\fR [\\fIoptions\\fR]\n.br\n\\fBkumo\\-\\fR\\fIROLE\\fR [\\fIoptions\\fR]\n";
    s += r#".SH DESCRIPTION
\fBkumo\fR is one executable that plays every role of a kumo cluster. It picks the
role from the name it was run as (a symlink such as \fBkumo\-server\fR) or from its
first argument (\fBkumo server\fR).
.SH ROLES
"#;
    for r in Role::ALL {
        s += &format!(
            ".TP\n\\fB{}\\fR (\\fBkumo {}\\fR)\n{}\n",
            esc(r.program()),
            esc(r.subcommand()),
            esc(r.summary())
        );
    }
    s += ".SH OPTIONS\n.TP\n\\fB\\-h\\fR, \\fB\\-\\-help\\fR\nList the roles and exit.\n.TP\n\\fB\\-V\\fR, \\fB\\-\\-version\\fR\nPrint the version and exit.\n";
    s += ".SH EXIT STATUS\n0 on success, 2 for an unknown role. Each role documents its own.\n";
    s += ".SH SEE ALSO\n";
    let refs: Vec<String> = Role::ALL
        .iter()
        .map(|r| format!("\\fB{}\\fR(1)", esc(r.program())))
        .collect();
    s += &refs.join(", ");
    s += "\n";
    s
}

/// Every page as (file name, content), each role's from its option list.
pub fn all_pages(options_of: fn(Role) -> OptionList) -> Vec<(String, String)> {
    let mut pages = vec![("kumo.1".to_string(), kumo_page())];
    for r in Role::ALL {
        pages.push((format!("{}.1", r.program()), page(*r, options_of(*r))));
    }
    pages
}
