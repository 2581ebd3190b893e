//! `${...}` references in step commands and arguments: `${pipeline.PARAM}`, `${STEP.OUTPUT}`,
//! `${STEP.id}` (the step's task id, `<run id>/<step>`) and `${STEP.artifacts.NAME.url}` (the
//! download URL of one of the step's artifacts, uploaded ones included).
//!
//! Only `${NAME.NAME}` is a reference; anything else (`${HOME}`, `$x`) is plain text, so shell
//! variables keep working. `$${` writes a literal `${`. After `STEP.`, `id` and
//! `artifacts.NAME.url` are read as the step's id and artifact URL, never as output names.

use std::fmt;

/// What a reference points at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reference {
    /// `${pipeline.NAME}`: a pipeline parameter.
    Param(String),
    /// `${STEP.OUTPUT}`: the local path of another step's output.
    Output { step: String, output: String },
    /// `${STEP.id}`: the step's task id, `<run id>/<step>`, the same for every attempt.
    StepId { step: String },
    /// `${STEP.artifacts.NAME.url}`: the URL the controller serves the step's artifact at.
    ArtifactUrl { step: String, artifact: String },
}

impl Reference {
    /// The step a reference points at, for all but `${pipeline.NAME}`.
    pub fn step(&self) -> Option<&str> {
        match self {
            Reference::Param(_) => None,
            Reference::Output { step, .. }
            | Reference::StepId { step }
            | Reference::ArtifactUrl { step, .. } => Some(step),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Param(name) => write!(f, "${{pipeline.{name}}}"),
            Reference::Output { step, output } => write!(f, "${{{step}.{output}}}"),
            Reference::StepId { step } => write!(f, "${{{step}.id}}"),
            Reference::ArtifactUrl { step, artifact } => {
                write!(f, "${{{step}.artifacts.{artifact}.url}}")
            }
        }
    }
}

/// A piece of a template string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(String),
    Ref(Reference),
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// Splits a string into text and references.
pub fn parse(input: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        text.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            text.push_str("${");
            rest = tail;
            continue;
        }
        if let Some((reference, consumed)) = parse_reference(after) {
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(Part::Ref(reference));
            rest = &after[consumed..];
        } else {
            text.push('$');
            rest = &after[1..];
        }
    }
    text.push_str(rest);
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    parts
}

/// Parses `${a.b}` at the start of `s`; returns the reference and the bytes it spans.
fn parse_reference(s: &str) -> Option<(Reference, usize)> {
    let body = s.strip_prefix("${")?;
    let end = body.find('}')?;
    let inner = &body[..end];
    if inner.is_empty() || !inner.chars().all(is_name_char) {
        return None;
    }
    let (head, tail) = inner.split_once('.')?;
    if head.is_empty() || tail.is_empty() {
        return None;
    }
    let step = head.to_string();
    let artifact = tail
        .strip_prefix("artifacts.")
        .and_then(|t| t.strip_suffix(".url"))
        .filter(|name| !name.is_empty());
    let reference = if head == "pipeline" {
        Reference::Param(tail.to_string())
    } else if tail == "id" {
        Reference::StepId { step }
    } else if let Some(artifact) = artifact {
        Reference::ArtifactUrl {
            step,
            artifact: artifact.to_string(),
        }
    } else {
        Reference::Output {
            step,
            output: tail.to_string(),
        }
    };
    Some((reference, 2 + end + 1))
}

/// Every reference in a string, in order.
pub fn references(input: &str) -> impl Iterator<Item = Reference> {
    parse(input).into_iter().filter_map(|part| match part {
        Part::Ref(r) => Some(r),
        Part::Text(_) => None,
    })
}

/// Final rendering: replaces the references that `resolve` knows with their values; unknown
/// references stay as written and `$${` becomes `${`.
pub fn render(input: &str, mut resolve: impl FnMut(&Reference) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    for part in parse(input) {
        match part {
            Part::Text(t) => out.push_str(&t),
            Part::Ref(r) => match resolve(&r) {
                Some(value) => out.push_str(&value),
                None => out.push_str(&r.to_string()),
            },
        }
    }
    out
}

/// Partial rendering: the result is still a template. Known references become their (escaped)
/// values, unknown ones stay references for a later pass, and literal `${` stays escaped.
pub fn render_partial(
    input: &str,
    mut resolve: impl FnMut(&Reference) -> Option<String>,
) -> String {
    let mut out = String::with_capacity(input.len());
    for part in parse(input) {
        match part {
            Part::Text(t) => out.push_str(&escape(&t)),
            Part::Ref(r) => match resolve(&r) {
                Some(value) => out.push_str(&escape(&value)),
                None => out.push_str(&r.to_string()),
            },
        }
    }
    out
}

/// Escapes `${` so the text survives [`render`] as plain text.
pub fn escape(text: &str) -> String {
    text.replace("${", "$${")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_params_and_outputs() {
        let refs: Vec<_> = references("tr < ${greet.greeting} > ${pipeline.out}").collect();
        assert_eq!(
            refs,
            vec![
                Reference::Output {
                    step: "greet".into(),
                    output: "greeting".into()
                },
                Reference::Param("out".into()),
            ]
        );
    }

    #[test]
    fn shell_variables_are_text() {
        assert_eq!(
            references("echo ${HOME} $x $ ${} ${a.} ${.b} ${a b.c}").count(),
            0
        );
        assert_eq!(
            render("echo ${HOME}", |_| Some("no".into())),
            "echo ${HOME}"
        );
    }

    #[test]
    fn dollar_dollar_escapes() {
        assert_eq!(references("$${pipeline.x}").count(), 0);
        assert_eq!(render("a $${pipeline.x} b", |_| None), "a ${pipeline.x} b");
    }

    #[test]
    fn partial_then_final_render() {
        let template = "hello ${pipeline.who} $${lit} ${a.b}!";
        let partial = render_partial(template, |r| match r {
            Reference::Param(p) if p == "who" => Some("${x.y}".into()),
            _ => None,
        });
        assert_eq!(partial, "hello $${x.y} $${lit} ${a.b}!");
        let done = render(&partial, |r| match r {
            Reference::Output { .. } => Some("/w/in/b".into()),
            _ => None,
        });
        assert_eq!(done, "hello ${x.y} ${lit} /w/in/b!");
    }

    #[test]
    fn step_ids_and_artifact_urls() {
        let refs: Vec<_> =
            references("${a.id} ${a.artifacts.data.url} ${a.artifacts.url} ${a.idx}").collect();
        assert_eq!(
            refs,
            vec![
                Reference::StepId { step: "a".into() },
                Reference::ArtifactUrl {
                    step: "a".into(),
                    artifact: "data".into()
                },
                Reference::Output {
                    step: "a".into(),
                    output: "artifacts.url".into()
                },
                Reference::Output {
                    step: "a".into(),
                    output: "idx".into()
                },
            ]
        );
        for r in &refs {
            assert_eq!(
                references(&r.to_string()).collect::<Vec<_>>(),
                std::slice::from_ref(r)
            );
        }
    }

    #[test]
    fn output_names_may_contain_dots() {
        let refs: Vec<_> = references("${s.model.pkl}").collect();
        assert_eq!(
            refs,
            vec![Reference::Output {
                step: "s".into(),
                output: "model.pkl".into()
            }]
        );
    }
}
