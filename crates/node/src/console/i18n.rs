//! The console's words in English, Korean, Chinese (simplified) and Japanese, as Fluent
//! resources compiled into the binary. A message missing in one language falls back to
//! English, and a test keeps the four catalogues in step.

use std::collections::HashMap;
use std::sync::OnceLock;

use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource, FluentValue};

use crate::users::Language;

const SOURCES: [(Language, &str); 4] = [
    (Language::En, include_str!("../../locales/en.ftl")),
    (Language::Ko, include_str!("../../locales/ko.ftl")),
    (Language::ZhHans, include_str!("../../locales/zh-CN.ftl")),
    (Language::Ja, include_str!("../../locales/ja.ftl")),
];

type Bundle = FluentBundle<FluentResource>;

fn catalog() -> &'static HashMap<Language, Bundle> {
    static CATALOG: OnceLock<HashMap<Language, Bundle>> = OnceLock::new();
    CATALOG.get_or_init(|| {
        SOURCES
            .iter()
            .filter_map(|(lang, src)| {
                let id = lang.code().parse().ok()?;
                let mut b = FluentBundle::new_concurrent(vec![id]);
                // Isolation marks would show up inside HTML attributes and tests.
                b.set_use_isolating(false);
                let res = match FluentResource::try_new((*src).to_owned()) {
                    Ok(r) => r,
                    Err((r, errors)) => {
                        tracing::error!("locale {}: {errors:?}", lang.code());
                        r
                    }
                };
                let _ = b.add_resource(res);
                Some((*lang, b))
            })
            .collect()
    })
}

/// Translates for one person's language.
#[derive(Debug, Clone, Copy)]
pub struct Tr {
    pub lang: Language,
}

impl Tr {
    pub fn new(lang: Language) -> Self {
        Self { lang }
    }

    pub fn code(&self) -> &'static str {
        self.lang.code()
    }

    fn format(&self, id: &str, args: Option<&FluentArgs<'_>>) -> String {
        let cat = catalog();
        for lang in [self.lang, Language::En] {
            let Some(b) = cat.get(&lang) else { continue };
            if let Some(p) = b.get_message(id).and_then(|m| m.value()) {
                let mut errors = Vec::new();
                return b.format_pattern(p, args, &mut errors).into_owned();
            }
        }
        id.to_owned()
    }

    /// The message `id`.
    pub fn t(&self, id: &str) -> String {
        self.format(id, None)
    }

    /// The message `id` with one argument.
    pub fn t1(&self, id: &str, name: &str, value: &str) -> String {
        let mut args = FluentArgs::new();
        args.set(name.to_owned(), FluentValue::from(value.to_owned()));
        self.format(id, Some(&args))
    }

    /// The message `id` with several arguments.
    pub fn tn(&self, id: &str, pairs: &[(&str, &str)]) -> String {
        let mut args = FluentArgs::new();
        for (k, v) in pairs {
            args.set((*k).to_owned(), FluentValue::from((*v).to_owned()));
        }
        self.format(id, Some(&args))
    }
}

/// The best console language for an `Accept-Language` header (before sign-in).
pub fn from_accept_language(header: Option<&str>) -> Language {
    header
        .unwrap_or("")
        .split(',')
        .filter_map(|part| part.split(';').next())
        .map(str::trim)
        .find_map(|tag| {
            let primary = tag.split('-').next().unwrap_or("");
            Language::parse(tag)
                .or_else(|_| Language::parse(primary))
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn ids(src: &str) -> Vec<String> {
        let mut v: Vec<String> = src
            .lines()
            .filter_map(|l| l.split_once(" = "))
            .map(|(k, _)| k.trim().to_owned())
            .filter(|k| !k.is_empty() && !k.starts_with('#'))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn every_language_has_every_message_and_parses() {
        let en = ids(SOURCES[0].1);
        for (lang, src) in SOURCES {
            assert!(
                FluentResource::try_new(src.to_owned()).is_ok(),
                "{} does not parse",
                lang.code()
            );
            assert_eq!(ids(src), en, "{} differs from en", lang.code());
        }
    }

    #[test]
    fn translates_with_arguments_and_falls_back() {
        let ko = Tr::new(Language::Ko);
        assert_eq!(ko.t("nav-inbox"), "수신함");
        assert_eq!(ko.t1("signed-in-as", "name", "김"), "김 님으로 로그인됨");
        assert_eq!(
            Tr::new(Language::Ja).t("no-such-message"),
            "no-such-message"
        );
        assert_eq!(Tr::new(Language::ZhHans).t("nav-inbox"), "收件箱");
    }

    #[test]
    fn accept_language_picks_the_first_supported() {
        assert_eq!(
            from_accept_language(Some("ko-KR,ko;q=0.9,en;q=0.8")),
            Language::Ko
        );
        assert_eq!(from_accept_language(Some("fr-FR, ja;q=0.5")), Language::Ja);
        assert_eq!(from_accept_language(Some("zh-CN")), Language::ZhHans);
        assert_eq!(from_accept_language(None), Language::En);
    }
}
