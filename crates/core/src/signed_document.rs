//! Signing an agreement file in place: the party's signature over the canonical text
//! and over each of its lifecycle events is written into the TOML, keeping the
//! people's comments and layout.

use toml_edit::{ArrayOfTables, DocumentMut, Item, Table, value};

use crate::agreement::Agreement;
use crate::canonical::{agreement_bytes, event_bytes, verify_event};
use crate::diagnostic::Diagnostics;
use crate::parse::parse_agreement;
use crate::signing::PartyKey;

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("{0}")]
    Invalid(#[from] Diagnostics),
    #[error("party `{0}` is not a party to this agreement")]
    NotAParty(String),
    #[error(
        "key `{key}` of `{party}` is not listed in the agreement, expected it in `keys` of party `{party}` (pass --add-key to add it; other parties must then sign again)"
    )]
    KeyNotListed { party: String, key: String },
    #[error("the file's TOML could not be edited: {0}")]
    Edit(String),
}

/// What signing did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignSummary {
    pub key_added: bool,
    /// Signatures of other parties dropped because adding the key changed the text.
    pub dropped_signatures: usize,
    pub events_signed: usize,
}

/// Signs `text` (an agreement file) as `key`'s party; returns the new text.
pub fn sign_document(
    file: &str,
    text: &str,
    key: &PartyKey,
    add_key: bool,
) -> Result<(String, SignSummary), SignError> {
    let mut summary = SignSummary::default();
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| SignError::Edit(e.to_string()))?;
    let mut agreement = parse_agreement(file, text)?;
    let party = key.party.as_str().to_owned();
    let public = key.public().to_string();
    let listed = agreement
        .party(&party)
        .ok_or_else(|| SignError::NotAParty(party.clone()))?
        .keys
        .contains(&public);
    if !listed {
        if !add_key {
            return Err(SignError::KeyNotListed { party, key: public });
        }
        add_key_to_party(&mut doc, &party, &public)?;
        summary.key_added = true;
        // The text changed: everyone's signatures over the old text are void.
        if let Some(sigs) = doc.get("signatures").and_then(Item::as_array_of_tables) {
            summary.dropped_signatures = sigs.len();
        }
        doc.remove("signatures");
        if let Some(events) = doc.get_mut("events").and_then(Item::as_array_of_tables_mut) {
            for e in events.iter_mut() {
                e.remove("signature");
            }
        }
        agreement = parse_agreement(file, &doc.to_string())?;
    }

    let signature = key.sign_b64(&agreement_bytes(&agreement));
    let sigs = doc
        .entry("signatures")
        .or_insert(Item::ArrayOfTables(ArrayOfTables::new()))
        .as_array_of_tables_mut()
        .ok_or_else(|| SignError::Edit("`signatures` is not an array of tables".to_owned()))?;
    sigs.retain(|t| t.get("party").and_then(Item::as_str) != Some(party.as_str()));
    let mut t = Table::new();
    t.insert("party", value(party.as_str()));
    t.insert("key", value(public.as_str()));
    t.insert("signature", value(signature));
    sigs.push(t);

    // Events are stored sorted by time in the checked value but in file order in the
    // TOML; match them by content.
    if let Some(events) = doc.get_mut("events").and_then(Item::as_array_of_tables_mut) {
        for t in events.iter_mut() {
            let Some(event) = find_event(&agreement, t) else {
                continue;
            };
            if event.party.as_str() != party {
                continue;
            }
            let mut unsigned = event.clone();
            unsigned.signature = None;
            if event.signature.is_some() && verify_event(&agreement, event).is_ok() {
                continue;
            }
            t.insert(
                "signature",
                value(key.sign_b64(&event_bytes(&agreement, &unsigned))),
            );
            summary.events_signed += 1;
        }
    }
    Ok((doc.to_string(), summary))
}

/// Signs as each of `keys` whose party is a party to the agreement, adding keys the
/// agreement does not list yet. Keys are added first (each addition voids earlier
/// signatures), then every party signs the final text.
pub fn sign_as_parties(file: &str, text: &str, keys: &[PartyKey]) -> Result<String, SignError> {
    let agreement = parse_agreement(file, text)?;
    let parties: Vec<&PartyKey> = keys
        .iter()
        .filter(|k| agreement.party(k.party.as_str()).is_some())
        .collect();
    let mut text = text.to_owned();
    for add_key in [true, false] {
        for key in &parties {
            text = sign_document(file, &text, key, add_key)?.0;
        }
    }
    Ok(text)
}

fn find_event<'a>(a: &'a Agreement, t: &Table) -> Option<&'a crate::agreement::Event> {
    let kind = t.get("kind")?.as_str()?;
    let party = t.get("party")?.as_str()?;
    let at_item = t.get("at")?;
    let at_text = match at_item.as_str() {
        Some(s) => s.to_owned(),
        None => at_item.as_datetime()?.to_string(),
    };
    let at = crate::parse::parse_instant(&at_text).ok()?;
    let condition = t.get("condition").and_then(Item::as_str);
    a.events.iter().find(|e| {
        e.kind.name() == kind
            && e.party.as_str() == party
            && e.at == at
            && match &e.kind {
                crate::agreement::EventKind::NoticeWithdrawn { condition: c } => {
                    c.as_deref() == condition
                }
                crate::agreement::EventKind::ConditionRecorded { condition: c } => {
                    Some(c.as_str()) == condition
                }
                _ => true,
            }
    })
}

fn add_key_to_party(doc: &mut DocumentMut, party: &str, public: &str) -> Result<(), SignError> {
    let parties = doc
        .get_mut("parties")
        .and_then(Item::as_array_of_tables_mut)
        .ok_or_else(|| SignError::Edit("`parties` is not an array of tables".to_owned()))?;
    for t in parties.iter_mut() {
        if t.get("id").and_then(Item::as_str) == Some(party) {
            let keys = t
                .entry("keys")
                .or_insert(value(toml_edit::Array::new()))
                .as_array_mut()
                .ok_or_else(|| SignError::Edit(format!("`keys` of `{party}` is not an array")))?;
            keys.push(public);
            return Ok(());
        }
    }
    Err(SignError::NotAParty(party.to_owned()))
}

/// Appends a lifecycle event to an agreement file, signed by `key`'s party.
pub fn append_event(
    file: &str,
    text: &str,
    key: &PartyKey,
    kind: &str,
    at: jiff::Timestamp,
    condition: Option<&str>,
) -> Result<String, SignError> {
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| SignError::Edit(e.to_string()))?;
    let events = doc
        .entry("events")
        .or_insert(Item::ArrayOfTables(ArrayOfTables::new()))
        .as_array_of_tables_mut()
        .ok_or_else(|| SignError::Edit("`events` is not an array of tables".to_owned()))?;
    let mut t = Table::new();
    t.insert("kind", value(kind));
    t.insert("party", value(key.party.as_str()));
    if let Some(c) = condition {
        t.insert("condition", value(c));
    }
    t.insert("at", value(at.to_string()));
    events.push(t);
    let unsigned = doc.to_string();
    // Validate (unknown kind, condition, or party is reported with its location), then sign.
    parse_agreement(file, &unsigned)?;
    let (signed, _) = sign_events_only(file, &unsigned, key)?;
    Ok(signed)
}

fn sign_events_only(file: &str, text: &str, key: &PartyKey) -> Result<(String, usize), SignError> {
    let agreement = parse_agreement(file, text)?;
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| SignError::Edit(e.to_string()))?;
    let mut n = 0;
    if let Some(events) = doc.get_mut("events").and_then(Item::as_array_of_tables_mut) {
        for t in events.iter_mut() {
            let Some(event) = find_event(&agreement, t) else {
                continue;
            };
            if event.party != key.party || event.signature.is_some() {
                continue;
            }
            t.insert(
                "signature",
                value(key.sign_b64(&event_bytes(&agreement, event))),
            );
            n += 1;
        }
    }
    Ok((doc.to_string(), n))
}
