//! `/metrics` as a test reads it: the Prometheus text format parsed into
//! samples (name, labels, value) and types, so tests compare values, not
//! substrings. Written from the format's description, independently of
//! the gateway's encoder.

use std::collections::{BTreeMap, HashMap};

/// One line of the exposition: `name{label="value",…} number`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub samples: Vec<Sample>,
    /// `# TYPE` of each family.
    pub types: HashMap<String, String>,
}

impl Metrics {
    /// Parses an exposition; panics on a line it cannot read.
    pub fn parse(text: &str) -> Metrics {
        let mut m = Metrics::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
                m.types.insert(name.to_owned(), kind.to_owned());
            } else if !line.starts_with('#') {
                m.samples.push(sample(line));
            }
        }
        m
    }

    /// The value of the series with exactly these labels, if present.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == wanted)
            .map(|s| s.value)
    }

    /// Like `get`, but the series must be there.
    #[track_caller]
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?} in {:#?}", self.names()))
    }

    /// Every series of a family, by the value of one label.
    pub fn by(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter_map(|s| Some((s.labels.get(label)?.clone(), s.value)))
            .collect()
    }

    /// The sum of every series of a family.
    pub fn total(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    }

    fn names(&self) -> Vec<String> {
        self.samples
            .iter()
            .map(|s| format!("{}{:?}", s.name, s.labels))
            .collect()
    }
}

fn sample(line: &str) -> Sample {
    let (series, value) = line.rsplit_once(' ').expect("a sample and its value");
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or_else(|e| panic!("{e}: {line}")),
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, BTreeMap::new()),
        Some((name, rest)) => {
            let inner = rest.strip_suffix('}').expect("labels end with }");
            (name, labels(inner))
        }
    };
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

/// `a="x",b="y\"z"` → {a: x, b: y"z} (values escape `\`, `"` and newlines).
fn labels(mut rest: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("label=\"value\"");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("a closing quote") {
                (i, '"') => break i,
                (_, '\\') => match chars.next().expect("an escaped character").1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        out.insert(key.trim_start_matches(',').to_owned(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    out
}
