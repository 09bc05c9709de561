//! `--help`: a role's options in the width of a terminal, and `kumo --help`.

use super::options::{self, OptionList};
use super::{Kind, Role, VERSION};

/// The `--help` text of a role.
pub fn help(role: Role, list: OptionList) -> String {
    let mut s = format!(
        "{} - {}\n\nUsage: {}",
        role.program(),
        role.summary(),
        role.program()
    );
    for o in options::each(list).filter(|o| o.required) {
        s += &format!(" -{} {}", o.short.unwrap_or(o.long), o.kind.placeholder());
    }
    s += " [options]";
    if !role.positional_usage().is_empty() {
        s += " ";
        s += role.positional_usage();
    }
    s += "\n\nOptions:\n";
    for o in options::each(list) {
        let mut left = match o.short {
            Some(sh) => format!("  -{sh}, --{}", o.long),
            None => format!("      --{}", o.long),
        };
        if o.kind != Kind::Switch {
            left += " ";
            left += o.kind.placeholder();
        }
        let mut text = o.help.to_string();
        if o.required {
            text += " Required.";
        }
        if let Some(d) = o.default {
            text += &format!(" [default: {d}]");
        }
        s += &format_entry(&left, &text);
    }
    // A role with its own -h (kumolog's --head) keeps --help alone.
    let help = if options::each(list).any(|o| o.short == Some("h")) {
        "      --help"
    } else {
        "  -h, --help"
    };
    s += &format_entry(help, "Print this help and exit.");
    s += &format_entry("      --version", "Print the version and exit.");
    let commands = role.commands();
    if !commands.is_empty() {
        s += "\nCommands:\n";
        for (name, text) in commands {
            s += &format_entry(&format!("  {name}"), text);
        }
    }
    s += &format!("\nSee {}(1) for details.\n", role.program());
    s
}

const HELP_WIDTH: usize = 79;
const HELP_INDENT: usize = 32;

fn format_entry(left: &str, text: &str) -> String {
    let mut out = String::from(left);
    let mut col = left.len();
    if col + 2 > HELP_INDENT {
        out.push('\n');
        col = 0;
    }
    out.push_str(&" ".repeat(HELP_INDENT - col));
    col = HELP_INDENT;
    for word in text.split_whitespace() {
        if col + 1 + word.len() > HELP_WIDTH && col > HELP_INDENT {
            out.push('\n');
            out.push_str(&" ".repeat(HELP_INDENT));
            col = HELP_INDENT;
        } else if col > HELP_INDENT {
            out.push(' ');
            col += 1;
        }
        out.push_str(word);
        col += word.len();
    }
    out.push('\n');
    out
}

/// `kumo --help`: the roles that exist, one line each.
pub fn top_help() -> String {
    let mut s = format!(
        "kumo {VERSION} - a distributed key-value store speaking the memcached protocol\n\n\
         Usage: kumo ROLE [options]\n       \
         kumo-ROLE [options]   (through a symlink; kumoctl, kumostat, kumohash have no dash)\n\nRoles:\n"
    );
    for r in Role::ALL {
        s += &format!(
            "  {:<10} {:<14} {}\n",
            r.subcommand(),
            r.program(),
            r.summary()
        );
    }
    s += "\nRun 'kumo ROLE --help' for the options of a role. See kumo(1).\n";
    s
}
