//! Agreement files: TOML written by people, parsed then validated into an
//! [`Agreement`], with every problem reported at once as `file:line:column: path: why`.
//!
//! The format is documented in `docs/agreements.md`.

use std::collections::BTreeSet;
use std::ops::Range;

use jiff::tz::TimeZone;
use jiff::{Span, SpanRelativeTo, Timestamp, Zoned};

use crate::agreement::*;
use crate::diagnostic::Diagnostics;
use crate::ids::{DeskId, PartyId};
use crate::source::{Ctx, Field, Table};

const TOP_KEYS: &str = "`id`, `version`, `title`, `draft`, `parties`, `channels`, `classification`, `release`, `term`, `conditions`, `obligations`, `events`, `signatures`";

/// Parses and validates one agreement document. `file` names it in diagnostics.
pub fn parse_agreement(file: &str, text: &str) -> Result<Agreement, Diagnostics> {
    let mut ctx = Ctx::new(file, text);
    let agreement = match ctx.parse() {
        Some(doc) => {
            let mut root = Table::root(&doc);
            let agreement = read_agreement(&mut ctx, &mut root);
            root.finish(&mut ctx, TOP_KEYS);
            agreement
        }
        None => None,
    };
    ctx.finish(agreement)
}

/// Parses an RFC 3339 instant such as `2019-11-23T00:00:01+09:00`.
pub fn parse_instant(s: &str) -> Result<Timestamp, String> {
    s.trim().parse::<Timestamp>().map_err(|e| {
        format!("`{s}` is not an RFC 3339 instant with an offset, such as `2019-11-23T00:00:00+09:00` ({e})")
    })
}

/// Parses an instant keeping its offset, so calendar arithmetic happens in that zone.
fn parse_zoned(s: &str, zone: Option<&TimeZone>) -> Result<Zoned, String> {
    let ts = parse_instant(s)?;
    if let Some(tz) = zone {
        return Ok(ts.to_zoned(tz.clone()));
    }
    let offset = jiff::fmt::temporal::Pieces::parse(s.trim())
        .ok()
        .and_then(|p| p.to_numeric_offset())
        .ok_or_else(|| format!("`{s}` has no UTC offset, expected one such as `+09:00` or `Z`"))?;
    Ok(ts.to_zoned(TimeZone::fixed(offset)))
}

/// Parses a length of time: ISO 8601 (`P1Y`, `PT1H`) or friendly (`1 year`, `90 days`, `5m`).
pub fn parse_span(s: &str) -> Result<Span, String> {
    let span: Span = s.trim().parse().map_err(|_| {
        format!("`{s}` is not a length of time, expected e.g. `1 year`, `90 days`, `1h`, `PT5M`")
    })?;
    if span.signum() <= 0 {
        return Err(format!(
            "`{s}` is not positive, expected a positive length of time"
        ));
    }
    Ok(span)
}

/// A span with no calendar units, for intervals measured by a clock.
fn clock_span(s: &str) -> Result<Span, String> {
    let span = parse_span(s)?;
    if span.get_years() != 0
        || span.get_months() != 0
        || span.get_weeks() != 0
        || span.get_days() != 0
    {
        return Err(format!(
            "`{s}` uses calendar units, expected hours, minutes or seconds such as `1h` or `5m`"
        ));
    }
    Ok(span)
}

/// Whole milliseconds of a clock span.
pub fn clock_ms(span: &Span) -> i64 {
    span.total((jiff::Unit::Millisecond, SpanRelativeTo::days_are_24_hours()))
        .map(|f| f as i64)
        .unwrap_or(i64::MAX)
}

fn is_word(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

fn read_agreement(ctx: &mut Ctx<'_>, root: &mut Table<'_, '_>) -> Option<Agreement> {
    let id = root.str_req(ctx, "id", "an agreement id such as `rok-prc-hotlines`");
    if let Some((id, span)) = &id
        && !is_word(id)
    {
        ctx.error(
            span,
            "id",
            format!("`{id}` is not an id, expected letters, digits, `-`, `_` or `.`"),
        );
    }
    let version = root
        .required(ctx, "version", "a version number from 1")
        .and_then(|f| {
            let v = f.as_i64(ctx, "a version number from 1")?;
            match u32::try_from(v) {
                Ok(v) if v >= 1 => Some(v),
                _ => {
                    ctx.error(
                        &f.span,
                        &f.path,
                        format!("`{v}` is not a version, expected a whole number from 1"),
                    );
                    None
                }
            }
        });
    let title = root.str_req(ctx, "title", "a title");
    let draft = root.bool_opt(ctx, "draft").unwrap_or(false);

    let parties = read_parties(ctx, root);
    let party_ids: Vec<PartyId> = parties.iter().map(|p| p.id.clone()).collect();
    let desks: Vec<DeskId> = parties
        .iter()
        .flat_map(|p| p.desks.iter().map(|d| d.id.clone()))
        .collect();

    let classification = read_classification(ctx, root, &party_ids);
    let common: Vec<String> = classification
        .as_ref()
        .map(|c| c.common.clone())
        .unwrap_or_default();
    let channels = read_channels(ctx, root, &desks, &common);
    let release = read_release(ctx, root, &party_ids, &common);
    let term = if draft && root.field("term").is_none() {
        Some(None)
    } else {
        read_term(ctx, root).map(Some)
    };
    if classification.is_none() && !channels.is_empty() {
        ctx.error(
            &root.span,
            "classification",
            "missing, expected a `[classification]` table because the agreement opens channels",
        );
    }
    let classification = classification.or_else(|| {
        Some(Classification {
            common: Vec::new(),
            parties: Vec::new(),
        })
    });
    let conditions = read_conditions(ctx, root, &party_ids);
    let obligations = read_obligations(ctx, root, &party_ids, &conditions);
    let events = read_events(ctx, root, &party_ids, &conditions);
    let signatures = read_signatures(ctx, root, &party_ids);

    let mut agreement = Agreement {
        id: id?.0,
        version: version?,
        title: title?.0,
        draft,
        parties,
        channels,
        classification: classification?,
        release: release?,
        term: term?,
        conditions,
        obligations,
        events,
        signatures,
    };
    // Sets are sorted so their written order never changes the canonical form.
    agreement.parties.sort_by(|a, b| a.id.cmp(&b.id));
    agreement.channels.sort_by(|a, b| a.id.cmp(&b.id));
    agreement
        .classification
        .parties
        .sort_by(|a, b| a.party.cmp(&b.party));
    agreement.release.grants.sort_by(|a, b| a.id.cmp(&b.id));
    agreement.conditions.sort_by(|a, b| a.id.cmp(&b.id));
    agreement.obligations.sort_by(|a, b| a.id.cmp(&b.id));
    Some(agreement)
}

fn dup_check(
    ctx: &mut Ctx<'_>,
    seen: &mut BTreeSet<String>,
    id: &str,
    span: &Range<usize>,
    path: &str,
    what: &str,
) {
    if !seen.insert(id.to_owned()) {
        ctx.error(
            span,
            path,
            format!("duplicate {what} `{id}`, expected each {what} once"),
        );
    }
}

fn known_party(
    ctx: &mut Ctx<'_>,
    parties: &[PartyId],
    s: &str,
    span: &Range<usize>,
    path: &str,
) -> Option<PartyId> {
    match parties.iter().find(|p| p.as_str() == s) {
        Some(p) => Some(p.clone()),
        None => {
            let names: Vec<&str> = parties.iter().map(PartyId::as_str).collect();
            ctx.error(
                span,
                path,
                format!("unknown party `{s}`, expected one of {}", list(&names)),
            );
            None
        }
    }
}

fn list(items: &[&str]) -> String {
    if items.is_empty() {
        return "(none declared)".to_owned();
    }
    items
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn read_parties(ctx: &mut Ctx<'_>, root: &mut Table<'_, '_>) -> Vec<Party> {
    let Some(field) = root.required(ctx, "parties", "an array of `[[parties]]` tables") else {
        return Vec::new();
    };
    let tables = field.tables(ctx);
    if tables.len() < 2 {
        ctx.error(
            &field.span,
            &field.path,
            format!(
                "{} part{} declared, expected at least two parties",
                tables.len(),
                if tables.len() == 1 { "y" } else { "ies" }
            ),
        );
    }
    let mut seen = BTreeSet::new();
    let mut seen_desks = BTreeSet::new();
    let mut out = Vec::new();
    for mut t in tables {
        let id = t
            .str_req(ctx, "id", "a party id such as `ROK`")
            .and_then(|(s, span)| {
                dup_check(
                    ctx,
                    &mut seen,
                    &s,
                    &span,
                    &format!("{}.id", t.path),
                    "party",
                );
                match PartyId::new(&s) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        ctx.error(&span, &format!("{}.id", t.path), e.to_string());
                        None
                    }
                }
            });
        let name = t.str_req(ctx, "name", "the party's full name");
        let mut keys = Vec::new();
        if let Some(f) = t.field("keys") {
            for (k, span) in f.strings(ctx, "public keys") {
                match crate::signing::PublicKey::parse(&k) {
                    Ok(_) => keys.push(k),
                    Err(e) => ctx.error(&span, &f.path, e.to_string()),
                }
            }
        }
        let mut desks = Vec::new();
        if let Some(f) = t.required(ctx, "desks", "an array of desks such as `[\"ROK.navy\"]`") {
            for (i, (d, span)) in f.strings(ctx, "desks").into_iter().enumerate() {
                let path = format!("{}[{i}]", f.path);
                match DeskId::new(&d) {
                    Ok(desk) => {
                        if let Some(p) = &id
                            && desk.party_str() != p.as_str()
                        {
                            ctx.error(&span, &path, format!("desk `{d}` belongs to `{}`, expected a desk of `{p}` such as `{p}.{}`", desk.party_str(), desk.name()));
                            continue;
                        }
                        dup_check(ctx, &mut seen_desks, &d, &span, &path, "desk");
                        desks.push(Desk {
                            name: desk.name().to_owned(),
                            id: desk,
                        });
                    }
                    Err(e) => ctx.error(&span, &path, e.to_string()),
                }
            }
        }
        t.finish(ctx, "`id`, `name`, `keys`, `desks`");
        if let (Some(id), Some((name, _))) = (id, name) {
            out.push(Party {
                id,
                name,
                keys,
                desks,
            });
        }
    }
    out
}

fn read_classification(
    ctx: &mut Ctx<'_>,
    root: &mut Table<'_, '_>,
    parties: &[PartyId],
) -> Option<Classification> {
    let mut t = root.field("classification")?.table(ctx)?;
    let mut common = Vec::new();
    if let Some(f) = t.required(
        ctx,
        "common",
        "the common scale, lowest first, e.g. `[\"UNCLASSIFIED\", \"SECRET\"]`",
    ) {
        let mut seen = BTreeSet::new();
        for (i, (name, span)) in f.strings(ctx, "level names").into_iter().enumerate() {
            let path = format!("{}[{i}]", f.path);
            if name.trim().is_empty() {
                ctx.error(
                    &span,
                    &path,
                    "empty level name, expected a name such as `SECRET`",
                );
            }
            dup_check(ctx, &mut seen, &name, &span, &path, "level");
            common.push(name);
        }
        if common.is_empty() {
            ctx.error(&f.span, &f.path, "empty scale, expected at least one level");
        }
    }
    let mut scales = Vec::new();
    let levels_span = t.span.clone();
    let levels_path = format!("{}.levels", t.path);
    if let Some(mut lt) = t.table(ctx, "levels") {
        for (party, field) in lt.entries() {
            let Some(pid) = known_party(ctx, parties, &party, &field.span, &field.path) else {
                continue;
            };
            let Some(mut pt) = field.table(ctx) else {
                continue;
            };
            let mut levels: Vec<PartyLevel> = Vec::new();
            let mut prev: Option<(String, usize)> = None;
            for (name, lf) in pt.entries() {
                let Some(target) = lf.as_str(ctx, "a common level name") else {
                    continue;
                };
                let Some(ci) = common.iter().position(|c| *c == target) else {
                    ctx.error(
                        &lf.span,
                        &lf.path,
                        format!(
                            "`{target}` is not on the common scale, expected one of {}",
                            list(&common.iter().map(String::as_str).collect::<Vec<_>>())
                        ),
                    );
                    continue;
                };
                if let Some((pname, pci)) = &prev {
                    if ci <= *pci {
                        ctx.error(&lf.span, &lf.path, format!("`{name}` maps to `{target}`, not above `{pname}` (`{}`): levels are listed lowest first and must map strictly upward", common.get(*pci).map(String::as_str).unwrap_or("?")));
                        continue;
                    }
                    if ci > pci + 1 {
                        let missing: Vec<&str> = common
                            .get(pci + 1..ci)
                            .unwrap_or(&[])
                            .iter()
                            .map(String::as_str)
                            .collect();
                        ctx.error(&lf.span, &lf.path, format!("gap in `{pid}`'s mapping: no level for {} between `{pname}` and `{name}`, expected every common level between a party's lowest and highest to be mapped", list(&missing)));
                    }
                }
                prev = Some((name.clone(), ci));
                levels.push(PartyLevel { name, common: ci });
            }
            if levels.is_empty() {
                ctx.error(
                    &field.span,
                    &field.path,
                    "no levels, expected at least one `\"own name\" = \"COMMON LEVEL\"`",
                );
            }
            pt.finish(ctx, "level names");
            scales.push(PartyScale { party: pid, levels });
        }
        lt.finish(ctx, "party ids");
    } else {
        ctx.error(
            &levels_span,
            &levels_path,
            "missing, expected `[classification.levels.PARTY]` tables mapping each party's levels",
        );
    }
    for p in parties {
        if !scales.iter().any(|s| &s.party == p) {
            ctx.error(
                &t.span,
                &format!("{}.levels.{p}", t.path),
                format!(
                    "party `{p}` has no levels, expected a `[classification.levels.{p}]` table"
                ),
            );
        }
    }
    t.finish(ctx, "`common`, `levels`");
    Some(Classification {
        common,
        parties: scales,
    })
}

fn common_level(ctx: &mut Ctx<'_>, common: &[String], f: &Field<'_, '_>) -> Option<usize> {
    let name = f.as_str(ctx, "a common level name")?;
    let found = common.iter().position(|c| *c == name);
    if found.is_none() && !common.is_empty() {
        ctx.error(
            &f.span,
            &f.path,
            format!(
                "`{name}` is not on the common scale, expected one of {}",
                list(&common.iter().map(String::as_str).collect::<Vec<_>>())
            ),
        );
    }
    found
}

fn read_channels(
    ctx: &mut Ctx<'_>,
    root: &mut Table<'_, '_>,
    desks: &[DeskId],
    common: &[String],
) -> Vec<Channel> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for mut t in root.tables(ctx, "channels") {
        let id = t.str_req(ctx, "id", "a channel id such as `navy-hotline`");
        if let Some((id, span)) = &id {
            dup_check(
                ctx,
                &mut seen,
                id,
                span,
                &format!("{}.id", t.path),
                "channel",
            );
        }
        let kind = t
            .str_req(ctx, "kind", "`hotline` or `exchange`")
            .and_then(|(k, span)| match k.as_str() {
                "hotline" => Some(ChannelKind::Hotline),
                "exchange" => Some(ChannelKind::Exchange),
                _ => {
                    ctx.error(
                        &span,
                        &format!("{}.kind", t.path),
                        format!("`{k}` is not a channel kind, expected `hotline` or `exchange`"),
                    );
                    None
                }
            });
        let mut cdesks = Vec::new();
        if let Some(f) = t.required(ctx, "desks", "the desks this channel joins") {
            for (i, (d, span)) in f.strings(ctx, "desks").into_iter().enumerate() {
                let path = format!("{}[{i}]", f.path);
                match desks.iter().find(|k| k.as_str() == d) {
                    Some(k) if cdesks.contains(k) => ctx.error(
                        &span,
                        &path,
                        format!("duplicate desk `{d}`, expected each desk once"),
                    ),
                    Some(k) => cdesks.push(k.clone()),
                    None => ctx.error(
                        &span,
                        &path,
                        format!(
                            "unknown desk `{d}`, expected a desk declared by a party ({})",
                            list(&desks.iter().map(DeskId::as_str).collect::<Vec<_>>())
                        ),
                    ),
                }
            }
            let parties: BTreeSet<&str> = cdesks.iter().map(DeskId::party_str).collect();
            if parties.len() < 2 && cdesks.len() == f.items(ctx, "desks").len() {
                ctx.error(
                    &f.span,
                    &f.path,
                    "joins desks of fewer than two parties, expected desks of at least two parties",
                );
            }
        }
        let ceiling = t
            .required(ctx, "ceiling", "the highest common level allowed")
            .and_then(|f| common_level(ctx, common, &f));
        let mut interval = None;
        let mut deadline = None;
        for (key, slot) in [
            ("test_interval", &mut interval),
            ("ack_deadline", &mut deadline),
        ] {
            let f = t.field(key);
            match (kind, f) {
                (Some(ChannelKind::Hotline), Some(f)) => {
                    if let Some(s) = f.as_str(ctx, "a length of time such as `1h`") {
                        match clock_span(&s) {
                            Ok(sp) => *slot = Some(sp),
                            Err(e) => ctx.error(&f.span, &f.path, e),
                        }
                    }
                }
                (Some(ChannelKind::Hotline), None) => {
                    ctx.error(&t.span, &format!("{}.{key}", t.path), "missing, a hotline needs a test interval and an acknowledgement deadline such as `1h` and `5m`");
                }
                (Some(ChannelKind::Exchange), Some(f)) => {
                    ctx.error(
                        &f.span,
                        &f.path,
                        format!(
                            "an exchange has no `{key}`, expected it only on `kind = \"hotline\"`"
                        ),
                    );
                }
                _ => {}
            }
        }
        t.finish(
            ctx,
            "`id`, `kind`, `desks`, `ceiling`, `test_interval`, `ack_deadline`",
        );
        if let (Some((id, _)), Some(kind), Some(ceiling)) = (id, kind, ceiling) {
            out.push(Channel {
                id,
                kind,
                desks: cdesks,
                ceiling,
                test_interval: interval,
                ack_deadline: deadline,
            });
        }
    }
    out
}

fn read_release(
    ctx: &mut Ctx<'_>,
    root: &mut Table<'_, '_>,
    parties: &[PartyId],
    common: &[String],
) -> Option<ReleaseRules> {
    let Some(mut t) = root.table(ctx, "release") else {
        return Some(ReleaseRules {
            third_party: ThirdPartyRule::OriginatorConsent,
            grants: Vec::new(),
        });
    };
    let rule = match t.str_opt(ctx, "third_party", "`originator-consent` or `forbidden`") {
        None => Some(ThirdPartyRule::OriginatorConsent),
        Some((s, span)) => {
            match s.as_str() {
                "originator-consent" => Some(ThirdPartyRule::OriginatorConsent),
                "forbidden" => Some(ThirdPartyRule::Forbidden),
                _ => {
                    ctx.error(&span, &format!("{}.third_party", t.path), format!("`{s}` is not a release rule, expected `originator-consent` or `forbidden`"));
                    None
                }
            }
        }
    };
    let mut grants = Vec::new();
    let mut seen = BTreeSet::new();
    for mut g in t.tables(ctx, "grants") {
        let id = g.str_req(ctx, "id", "a clause id");
        if let Some((id, span)) = &id {
            dup_check(ctx, &mut seen, id, span, &format!("{}.id", g.path), "grant");
        }
        let path = g.path.clone();
        let originator = g
            .str_req(ctx, "originator", "the originating party")
            .and_then(|(s, sp)| known_party(ctx, parties, &s, &sp, &format!("{path}.originator")));
        let from = g
            .str_req(ctx, "from", "the party passing information on")
            .and_then(|(s, sp)| known_party(ctx, parties, &s, &sp, &format!("{path}.from")));
        let mut to = Vec::new();
        if let Some(f) = g.required(ctx, "to", "the parties it may go to") {
            for (s, sp) in f.strings(ctx, "party ids") {
                if let Some(p) = known_party(ctx, parties, &s, &sp, &f.path) {
                    to.push(p);
                }
            }
        }
        to.sort();
        let ceiling = g
            .required(ctx, "ceiling", "the highest common level granted")
            .and_then(|f| common_level(ctx, common, &f));
        g.finish(ctx, "`id`, `originator`, `from`, `to`, `ceiling`");
        if let (Some((id, _)), Some(originator), Some(from), Some(ceiling)) =
            (id, originator, from, ceiling)
        {
            grants.push(ReleaseGrant {
                id,
                originator,
                from,
                to,
                ceiling,
            });
        }
    }
    t.finish(ctx, "`third_party`, `grants`");
    Some(ReleaseRules {
        third_party: rule?,
        grants,
    })
}

fn read_term(ctx: &mut Ctx<'_>, root: &mut Table<'_, '_>) -> Option<Term> {
    let mut t = root.required(ctx, "term", "a `[term]` table")?.table(ctx)?;
    let path = t.path.clone();
    let zone = match t.str_opt(ctx, "time_zone", "an IANA time zone such as `Asia/Seoul`") {
        Some((z, span)) => match TimeZone::get(&z) {
            Ok(tz) => Some(tz),
            Err(_) => {
                ctx.error(
                    &span,
                    &format!("{path}.time_zone"),
                    format!("unknown time zone `{z}`, expected an IANA name such as `Asia/Seoul`"),
                );
                None
            }
        },
        None => None,
    };
    let effective = t
        .required(
            ctx,
            "effective",
            "an RFC 3339 instant such as `2016-11-23T00:00:00+09:00`",
        )
        .and_then(|f| {
            let s = f.as_str_or_datetime(ctx, "an RFC 3339 instant")?;
            match parse_zoned(&s, zone.as_ref()) {
                Ok(z) => Some(z),
                Err(e) => {
                    ctx.error(&f.span, &f.path, e);
                    None
                }
            }
        });
    let span_field = |ctx: &mut Ctx<'_>,
                      t: &mut Table<'_, '_>,
                      key: &str|
     -> Option<(Span, Range<usize>, String)> {
        let f = t.field(key)?;
        let s = f.as_str(ctx, "a length of time such as `1 year`")?;
        match parse_span(&s) {
            Ok(sp) => Some((sp, f.span.clone(), f.path.clone())),
            Err(e) => {
                ctx.error(&f.span, &f.path, e);
                None
            }
        }
    };
    let length = span_field(ctx, &mut t, "length");
    let notice = span_field(ctx, &mut t, "notice");
    let auto_renew = t.bool_opt(ctx, "auto_renew").unwrap_or(false);
    if auto_renew && length.is_none() && t.field("length").is_none() {
        ctx.error(
            &t.span,
            &format!("{path}.length"),
            "missing, automatic renewal needs a term length such as `1 year`",
        );
    }
    if let (Some(eff), Some((len, _, _)), Some((not, nspan, npath))) =
        (&effective, &length, &notice)
        && let (Ok(end), Ok(nend)) = (eff.checked_add(*len), eff.checked_add(*not))
        && nend > end
    {
        ctx.error(nspan, npath, format!("notice period `{not:#}` is longer than the term `{len:#}`, expected a notice period no longer than the term"));
    }
    t.finish(
        ctx,
        "`effective`, `time_zone`, `length`, `auto_renew`, `notice`",
    );
    Some(Term {
        effective: effective?,
        length: length.map(|l| l.0),
        auto_renew,
        notice: notice.map(|n| n.0),
    })
}

fn read_conditions(
    ctx: &mut Ctx<'_>,
    root: &mut Table<'_, '_>,
    parties: &[PartyId],
) -> Vec<Condition> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for mut t in root.tables(ctx, "conditions") {
        let id = t.str_req(ctx, "id", "a condition id");
        if let Some((id, span)) = &id {
            dup_check(
                ctx,
                &mut seen,
                id,
                span,
                &format!("{}.id", t.path),
                "condition",
            );
        }
        let text = t.str_req(ctx, "text", "what must happen, in words");
        let mut may = Vec::new();
        if let Some(f) = t.required(ctx, "may_record", "the parties that may record it") {
            for (s, sp) in f.strings(ctx, "party ids") {
                if let Some(p) = known_party(ctx, parties, &s, &sp, &f.path) {
                    may.push(p);
                }
            }
        }
        may.sort();
        t.finish(ctx, "`id`, `text`, `may_record`");
        if let (Some((id, _)), Some((text, _))) = (id, text) {
            out.push(Condition {
                id,
                text,
                may_record: may,
            });
        }
    }
    out
}

fn read_obligations(
    ctx: &mut Ctx<'_>,
    root: &mut Table<'_, '_>,
    parties: &[PartyId],
    conditions: &[Condition],
) -> Vec<Obligation> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for mut t in root.tables(ctx, "obligations") {
        let path = t.path.clone();
        let id = t.str_req(ctx, "id", "an obligation id");
        if let Some((id, span)) = &id {
            dup_check(
                ctx,
                &mut seen,
                id,
                span,
                &format!("{path}.id"),
                "obligation",
            );
        }
        let from = t
            .str_req(ctx, "from", "the party that owes")
            .and_then(|(s, sp)| known_party(ctx, parties, &s, &sp, &format!("{path}.from")));
        let to = t
            .str_req(ctx, "to", "the party owed")
            .and_then(|(s, sp)| known_party(ctx, parties, &s, &sp, &format!("{path}.to")));
        let owed = match t.str_req(ctx, "kind", "`payment` or `act`") {
            Some((k, _)) if k == "payment" => {
                let amount = t
                    .required(ctx, "amount", "a whole amount of money")
                    .and_then(|f| {
                        let v = f.as_i64(ctx, "a whole amount of money")?;
                        match u64::try_from(v) {
                            Ok(v) => Some(v),
                            Err(_) => {
                                ctx.error(
                                    &f.span,
                                    &f.path,
                                    format!(
                                        "`{v}` is negative, expected an amount of zero or more"
                                    ),
                                );
                                None
                            }
                        }
                    });
                let currency = t.str_req(ctx, "currency", "an ISO 4217 code such as `USD`").and_then(|(c, sp)| {
                    if c.len() == 3 && c.chars().all(|ch| ch.is_ascii_uppercase()) {
                        Some(c)
                    } else {
                        ctx.error(&sp, &format!("{path}.currency"), format!("`{c}` is not a currency, expected an ISO 4217 code such as `USD`"));
                        None
                    }
                });
                match (amount, currency) {
                    (Some(amount), Some(currency)) => Some(Owed::Payment { amount, currency }),
                    _ => None,
                }
            }
            Some((k, _)) if k == "act" => t
                .str_req(ctx, "act", "what must be done, in words")
                .map(|(act, _)| Owed::Act { act }),
            Some((k, sp)) => {
                ctx.error(
                    &sp,
                    &format!("{path}.kind"),
                    format!("`{k}` is not an obligation kind, expected `payment` or `act`"),
                );
                None
            }
            None => None,
        };
        let per = match t.str_opt(ctx, "per", "`once`, `month`, `quarter` or `year`") {
            None => Some(Per::Once),
            Some((p, sp)) => {
                match p.as_str() {
                    "once" => Some(Per::Once),
                    "month" => Some(Per::Month),
                    "quarter" => Some(Per::Quarter),
                    "year" => Some(Per::Year),
                    _ => {
                        ctx.error(&sp, &format!("{path}.per"), format!("`{p}` is not a period, expected `once`, `month`, `quarter` or `year`"));
                        None
                    }
                }
            }
        };
        let period = t
            .str_opt(ctx, "period", "the period's name such as `2019`")
            .map(|p| p.0);
        let state = t.str_req(ctx, "state", "`agreed`, `proposed`, `disputed`, `fulfilled` or `withdrawn`").and_then(|(s, sp)| match s.as_str() {
            "agreed" => Some(ObligationState::Agreed),
            "proposed" => Some(ObligationState::Proposed),
            "disputed" => Some(ObligationState::Disputed),
            "fulfilled" => Some(ObligationState::Fulfilled),
            "withdrawn" => Some(ObligationState::Withdrawn),
            _ => {
                ctx.error(&sp, &format!("{path}.state"), format!("`{s}` is not a state, expected `agreed`, `proposed`, `disputed`, `fulfilled` or `withdrawn`"));
                None
            }
        });
        let source = t.str_req(ctx, "source", "where the figure comes from");
        let note = t.str_opt(ctx, "note", "a note").map(|n| n.0);
        let condition = match t.str_opt(ctx, "condition", "a condition id") {
            Some((c, sp)) if !conditions.iter().any(|k| k.id == c) => {
                ctx.error(
                    &sp,
                    &format!("{path}.condition"),
                    format!(
                        "unknown condition `{c}`, expected one of {}",
                        list(&conditions.iter().map(|k| k.id.as_str()).collect::<Vec<_>>())
                    ),
                );
                None
            }
            other => other.map(|c| c.0),
        };
        t.finish(ctx, "`id`, `from`, `to`, `kind`, `amount`, `currency`, `act`, `per`, `period`, `state`, `source`, `note`, `condition`");
        if let (
            Some((id, _)),
            Some(from),
            Some(to),
            Some(owed),
            Some(per),
            Some(state),
            Some((source, _)),
        ) = (id, from, to, owed, per, state, source)
        {
            out.push(Obligation {
                id,
                from,
                to,
                owed,
                per,
                period,
                state,
                source,
                note,
                condition,
            });
        }
    }
    out
}

fn read_events(
    ctx: &mut Ctx<'_>,
    root: &mut Table<'_, '_>,
    parties: &[PartyId],
    conditions: &[Condition],
) -> Vec<Event> {
    let mut out = Vec::new();
    for mut t in root.tables(ctx, "events") {
        let path = t.path.clone();
        let party = t
            .str_req(ctx, "party", "the party whose act this is")
            .and_then(|(s, sp)| known_party(ctx, parties, &s, &sp, &format!("{path}.party")));
        let at = t.required(ctx, "at", "an RFC 3339 instant").and_then(|f| {
            let s = f.as_str_or_datetime(ctx, "an RFC 3339 instant")?;
            parse_instant(&s)
                .map_err(|e| ctx.error(&f.span, &f.path, e))
                .ok()
        });
        let condition_ref =
            |ctx: &mut Ctx<'_>, t: &mut Table<'_, '_>, required: bool| -> Option<Option<String>> {
                let f = if required {
                    t.required(ctx, "condition", "a condition id")
                } else {
                    t.field("condition")
                };
                let Some(f) = f else { return Some(None) };
                let c = f.as_str(ctx, "a condition id")?;
                match conditions.iter().find(|k| k.id == c) {
                    Some(k) => Some(Some(k.id.clone())),
                    None => {
                        ctx.error(
                            &f.span,
                            &f.path,
                            format!(
                                "unknown condition `{c}`, expected one of {}",
                                list(&conditions.iter().map(|k| k.id.as_str()).collect::<Vec<_>>())
                            ),
                        );
                        None
                    }
                }
            };
        let kind = match t.str_req(ctx, "kind", "an event kind") {
            Some((k, sp)) => match k.as_str() {
                "signed" => Some(EventKind::Signed),
                "notice-of-withdrawal" => Some(EventKind::NoticeOfWithdrawal),
                "notice-withdrawn" => condition_ref(ctx, &mut t, false)
                    .map(|condition| EventKind::NoticeWithdrawn { condition }),
                "condition-recorded" => condition_ref(ctx, &mut t, true)
                    .and_then(|c| c)
                    .map(|condition| EventKind::ConditionRecorded { condition }),
                "suspended" => {
                    let until = match t.field("until") {
                        None => Some(None),
                        Some(f) => f
                            .as_str_or_datetime(ctx, "an RFC 3339 instant")
                            .and_then(|s| {
                                parse_instant(&s)
                                    .map_err(|e| ctx.error(&f.span, &f.path, e))
                                    .ok()
                            })
                            .map(Some),
                    };
                    if let (Some(Some(u)), Some(a)) = (&until, &at)
                        && u <= a
                    {
                        ctx.error(&t.span, &format!("{path}.until"), format!("suspension ends at {u}, not after it starts at {a}, expected a later instant"));
                    }
                    until.map(|until| EventKind::Suspended { until })
                }
                "resumed" => Some(EventKind::Resumed),
                "terminated" => Some(EventKind::Terminated),
                _ => {
                    ctx.error(&sp, &format!("{path}.kind"), format!("`{k}` is not an event kind, expected `signed`, `notice-of-withdrawal`, `notice-withdrawn`, `condition-recorded`, `suspended`, `resumed` or `terminated`"));
                    None
                }
            },
            None => None,
        };
        if let (Some(EventKind::ConditionRecorded { condition }), Some(p)) = (&kind, &party)
            && let Some(c) = conditions.iter().find(|c| &c.id == condition)
            && !c.may_record.contains(p)
        {
            ctx.error(
                &t.span,
                &format!("{path}.party"),
                format!(
                    "party `{p}` may not record condition `{condition}`, expected one of {}",
                    list(&c.may_record.iter().map(PartyId::as_str).collect::<Vec<_>>())
                ),
            );
        }
        let signature = t
            .str_opt(ctx, "signature", "a base64 signature")
            .map(|s| s.0);
        t.finish(
            ctx,
            "`kind`, `party`, `at`, `condition`, `until`, `signature`",
        );
        if let (Some(kind), Some(party), Some(at)) = (kind, party, at) {
            out.push(Event {
                kind,
                party,
                at,
                signature,
            });
        }
    }
    // Events take effect in time order; the file order breaks ties.
    out.sort_by_key(|e| e.at);
    out
}

fn read_signatures(
    ctx: &mut Ctx<'_>,
    root: &mut Table<'_, '_>,
    parties: &[PartyId],
) -> Vec<PartySignature> {
    let mut out = Vec::new();
    for mut t in root.tables(ctx, "signatures") {
        let path = t.path.clone();
        let party = t
            .str_req(ctx, "party", "the signing party")
            .and_then(|(s, sp)| known_party(ctx, parties, &s, &sp, &format!("{path}.party")));
        let key = t.str_req(ctx, "key", "the signing public key");
        let sig = t.str_req(ctx, "signature", "a base64 signature");
        t.finish(ctx, "`party`, `key`, `signature`");
        if let (Some(party), Some((key, _)), Some((signature, _))) = (party, key, sig) {
            out.push(PartySignature {
                party,
                key,
                signature,
            });
        }
    }
    out
}
