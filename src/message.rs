//! Downstream messages: builder, validation and JSON (protocol:
//! [downstream messages](crate::protocol#downstream-messages),
//! [encoding](crate::protocol#encoding)).
//!
//! ```
//! use fcm_xmpp::{Message, Notification, Priority};
//!
//! let msg = Message::to_topic("news")
//!     .priority(Priority::High)
//!     .time_to_live(0)
//!     .data("story", "42")
//!     .notification(Notification::new().title("Hello").body("World"));
//! assert!(msg.validate().is_ok());
//! assert!(msg.id().starts_with("fx-"));
//! let json = msg.to_json();
//! assert!(json.contains(r#""time_to_live":0"#));
//! ```

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use miniserde::json::{Object, Value};

use crate::error::InvalidMessage;
use crate::json::{self, FieldError};
use crate::xml::first_forbidden_char;

/// The largest `time_to_live` CCS accepts: 4 weeks, in seconds.
pub const MAX_TIME_TO_LIVE: u32 = 2_419_200;

/// The most bytes the `data` keys and values may add up to.
pub const MAX_DATA_BYTES: usize = 4096;

/// The most `&&` / `||` operators a `condition` may contain.
pub const MAX_CONDITION_OPERATORS: usize = 2;

/// The most bytes a [`Message::group`] key may have.
pub const MAX_GROUP_BYTES: usize = 256;

/// The prefix that turns a `to` into a topic.
const TOPIC_PREFIX: &str = "/topics/";

/// Delivery priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    /// `"normal"`.
    Normal,
    /// `"high"`.
    High,
}

impl Priority {
    /// The JSON value: `"normal"` or `"high"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Normal => "normal",
            Priority::High => "high",
        }
    }

    /// Parses the JSON value; `None` for anything but `normal` / `high`.
    pub fn from_name(name: &str) -> Option<Priority> {
        match name {
            "normal" => Some(Priority::Normal),
            "high" => Some(Priority::High),
            _ => None,
        }
    }
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `notification` object (display message).
///
/// Build it with [`Notification::new`] and the by-value setters, which are
/// named like the JSON fields. Unset fields are left out of the JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Notification {
    /// `title`.
    pub title: Option<String>,
    /// `body`.
    pub body: Option<String>,
    /// `android_channel_id`.
    pub android_channel_id: Option<String>,
    /// `icon`.
    pub icon: Option<String>,
    /// `sound`.
    pub sound: Option<String>,
    /// `tag`.
    pub tag: Option<String>,
    /// `color` (`#rrggbb`).
    pub color: Option<String>,
    /// `click_action`.
    pub click_action: Option<String>,
    /// `badge`.
    pub badge: Option<String>,
    /// `subtitle`.
    pub subtitle: Option<String>,
    /// `body_loc_key`.
    pub body_loc_key: Option<String>,
    /// `body_loc_args`.
    pub body_loc_args: Option<Vec<String>>,
    /// `title_loc_key`.
    pub title_loc_key: Option<String>,
    /// `title_loc_args`.
    pub title_loc_args: Option<Vec<String>>,
}

macro_rules! notification_string_setters {
    ($($field:ident),* $(,)?) => {
        $(
            #[doc = concat!("Sets `", stringify!($field), "`.")]
            pub fn $field(mut self, value: impl Into<String>) -> Self {
                self.$field = Some(value.into());
                self
            }
        )*
    };
}

impl Notification {
    /// An empty notification; add fields with the setters.
    pub fn new() -> Self {
        Notification::default()
    }

    notification_string_setters!(
        title,
        body,
        android_channel_id,
        icon,
        sound,
        tag,
        color,
        click_action,
        badge,
        subtitle,
        body_loc_key,
        title_loc_key,
    );

    /// Sets `body_loc_args` (sent as a JSON array of strings).
    pub fn body_loc_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.body_loc_args = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// Sets `title_loc_args` (sent as a JSON array of strings).
    pub fn title_loc_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.title_loc_args = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// The string fields in JSON order, paired with their JSON names.
    fn string_fields(&self) -> [(&'static str, &Option<String>); 12] {
        [
            ("title", &self.title),
            ("body", &self.body),
            ("android_channel_id", &self.android_channel_id),
            ("icon", &self.icon),
            ("sound", &self.sound),
            ("tag", &self.tag),
            ("color", &self.color),
            ("click_action", &self.click_action),
            ("badge", &self.badge),
            ("subtitle", &self.subtitle),
            ("body_loc_key", &self.body_loc_key),
            ("title_loc_key", &self.title_loc_key),
        ]
    }

    /// Appends the JSON object for this notification to `out`.
    pub fn write_json(&self, out: &mut String) {
        out.push('{');
        let mut first = true;
        for (name, value) in self.string_fields() {
            if let Some(v) = value {
                json::write_key(name, &mut first, out);
                json::write_str(v, out);
            }
        }
        for (name, args) in [
            ("body_loc_args", &self.body_loc_args),
            ("title_loc_args", &self.title_loc_args),
        ] {
            if let Some(args) = args {
                json::write_key(name, &mut first, out);
                out.push('[');
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    json::write_str(a, out);
                }
                out.push(']');
            }
        }
        out.push('}');
    }

    /// Reads a `notification` object strictly (strings must be strings,
    /// `*_loc_args` arrays of strings); unknown fields are ignored.
    fn from_object(obj: &Object) -> Result<Notification, FieldError> {
        let s = |field: &'static str| json::opt_str(obj, field).map(|v| v.map(str::to_owned));
        Ok(Notification {
            title: s("title")?,
            body: s("body")?,
            android_channel_id: s("android_channel_id")?,
            icon: s("icon")?,
            sound: s("sound")?,
            tag: s("tag")?,
            color: s("color")?,
            click_action: s("click_action")?,
            badge: s("badge")?,
            subtitle: s("subtitle")?,
            body_loc_key: s("body_loc_key")?,
            body_loc_args: json::opt_str_array(obj, "body_loc_args")?,
            title_loc_key: s("title_loc_key")?,
            title_loc_args: json::opt_str_array(obj, "title_loc_args")?,
        })
    }
}

/// A downstream message. Built with [`Message::to`] / [`Message::to_topic`] /
/// [`Message::to_condition`] and by-value setters; validated at send.
///
/// Setters are named like the JSON fields. Because a setter and a getter
/// cannot share a name, getters are `get_<field>()`, plus [`Message::id`],
/// [`Message::target`] and [`Message::data_pairs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub(crate) to: Option<String>,
    pub(crate) condition: Option<String>,
    pub(crate) message_id: String,
    pub(crate) collapse_key: Option<String>,
    pub(crate) priority: Option<Priority>,
    pub(crate) content_available: Option<bool>,
    pub(crate) mutable_content: Option<bool>,
    pub(crate) time_to_live: Option<u32>,
    pub(crate) delay_while_idle: Option<bool>,
    pub(crate) delivery_receipt_requested: Option<bool>,
    pub(crate) dry_run: Option<bool>,
    pub(crate) data: Vec<(String, String)>,
    pub(crate) notification: Option<Notification>,
    /// Client-side only (never written to the wire): see [`Message::group`].
    pub(crate) group: Option<String>,
}

/// A fresh process-unique message id, e.g. `fx-3f9a1c0d5e7b2a64-17`.
///
/// The middle part is fixed per process and derived from the clock, the
/// process id and std's randomly keyed hasher, so ids from different runs do
/// not collide in practice; the last part is an atomic counter. Never a bare
/// timestamp ([protocol: downstream messages](crate::protocol#downstream-messages)).
pub fn next_message_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let prefix = process_prefix();
    let mut id = String::with_capacity(3 + prefix.len() + 1 + 20);
    id.push_str("fx-");
    id.push_str(prefix);
    id.push('-');
    json::write_u64(n, &mut id);
    id
}

/// 16 hex digits, computed once per process.
fn process_prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| {
        // RandomState is keyed from OS randomness once per thread; mixing in
        // time and pid guards against a degenerate platform seed.
        let mut h = RandomState::new().build_hasher();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        nanos.hash(&mut h);
        std::process::id().hash(&mut h);
        Instant::now().hash(&mut h);
        std::thread::current().id().hash(&mut h);
        format!("{:016x}", h.finish())
    })
}

impl Message {
    /// A message with no field set and an empty id (no id is generated).
    pub(crate) fn blank() -> Self {
        Message {
            to: None,
            condition: None,
            message_id: String::new(),
            collapse_key: None,
            priority: None,
            content_available: None,
            mutable_content: None,
            time_to_live: None,
            delay_while_idle: None,
            delivery_receipt_requested: None,
            dry_run: None,
            data: Vec::new(),
            notification: None,
            // Client-side only: never in the JSON.
            group: None,
        }
    }

    fn with_target(to: Option<String>, condition: Option<String>) -> Self {
        Message {
            to,
            condition,
            message_id: next_message_id(),
            ..Message::blank()
        }
    }

    /// A message to a registration token, notification key or `/topics/NAME`.
    /// Gets a fresh [`next_message_id`] at once.
    pub fn to(to: impl Into<String>) -> Self {
        Message::with_target(Some(to.into()), None)
    }

    /// A message to topic `name` (`to` becomes `/topics/<name>`; a `name` that
    /// already starts with `/topics/` is taken as is).
    pub fn to_topic(name: impl AsRef<str>) -> Self {
        let name = name.as_ref();
        if name.starts_with(TOPIC_PREFIX) {
            Message::to(name)
        } else {
            Message::to(format!("{TOPIC_PREFIX}{name}"))
        }
    }

    /// A message to a topic `condition`, e.g. `'a' in topics && 'b' in topics`
    /// (at most two `&&` / `||` operators).
    pub fn to_condition(condition: impl Into<String>) -> Self {
        Message::with_target(None, Some(condition.into()))
    }

    // ---- setters -------------------------------------------------------

    /// Replaces the generated `message_id`. It must be unique per sender id.
    pub fn message_id(mut self, id: impl Into<String>) -> Self {
        self.message_id = id.into();
        self
    }

    /// Sets `collapse_key` (CCS keeps at most 4 distinct keys per device).
    pub fn collapse_key(mut self, key: impl Into<String>) -> Self {
        self.collapse_key = Some(key.into());
        self
    }

    /// Sets `priority`.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Sets `content_available` (iOS: wake the app).
    pub fn content_available(mut self, yes: bool) -> Self {
        self.content_available = Some(yes);
        self
    }

    /// Sets `mutable_content` (iOS 10+).
    pub fn mutable_content(mut self, yes: bool) -> Self {
        self.mutable_content = Some(yes);
        self
    }

    /// Sets `time_to_live` in seconds, `0..=2419200`. `0` means "now or
    /// never" and is sent as `0`, never dropped as a default.
    pub fn time_to_live(mut self, seconds: u32) -> Self {
        self.time_to_live = Some(seconds);
        self
    }

    /// Sets `delay_while_idle` (GCM only; FCM ignores it).
    pub fn delay_while_idle(mut self, yes: bool) -> Self {
        self.delay_while_idle = Some(yes);
        self
    }

    /// Sets `delivery_receipt_requested`: CCS then sends a receipt event.
    pub fn delivery_receipt_requested(mut self, yes: bool) -> Self {
        self.delivery_receipt_requested = Some(yes);
        self
    }

    /// Sets `dry_run`: CCS validates the message but does not deliver it.
    pub fn dry_run(mut self, yes: bool) -> Self {
        self.dry_run = Some(yes);
        self
    }

    /// Adds one `data` pair. Pairs keep insertion order; setting a key again
    /// replaces its value in place (JSON objects have unique keys).
    pub fn data(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        let value = value.into();
        match self.data.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.data.push((key, value)),
        }
        self
    }

    /// Sets the `notification` object.
    pub fn notification(mut self, notification: Notification) -> Self {
        self.notification = Some(notification);
        self
    }

    /// Puts the message in the ordered group `key`, a client-side setting
    /// that is never written to the wire. The worker [`Client`](crate::client::Client)
    /// sends the messages of one group strictly one after another, in the
    /// order it accepted them: the next is written only once the previous
    /// one has its final outcome (delivered, rejected or returned), however
    /// long its retries, resends and reconnects take. Other groups and
    /// ungrouped messages flow around a waiting group.
    ///
    /// An empty `key` means no group. A key longer than [`MAX_GROUP_BYTES`]
    /// is refused by [`Message::validate`] (field `group`).
    pub fn group(mut self, key: impl Into<String>) -> Self {
        let key = key.into();
        self.group = (!key.is_empty()).then_some(key);
        self
    }

    // ---- getters -------------------------------------------------------

    /// The message id (generated unique unless replaced; never empty unless
    /// set so, which [`Message::validate`] refuses).
    pub fn id(&self) -> &str {
        &self.message_id
    }

    /// The recipient: the `to` value, or the `condition` for condition
    /// messages (`""` only for a message parsed without either, which does
    /// not validate).
    pub fn target(&self) -> &str {
        self.to
            .as_deref()
            .or(self.condition.as_deref())
            .unwrap_or("")
    }

    /// True if this message goes to a `condition` instead of a `to`.
    pub fn is_condition(&self) -> bool {
        self.to.is_none() && self.condition.is_some()
    }

    /// The topic name if `to` is `/topics/NAME`.
    pub fn topic(&self) -> Option<&str> {
        self.to.as_deref()?.strip_prefix(TOPIC_PREFIX)
    }

    /// `to`, if set.
    pub fn get_to(&self) -> Option<&str> {
        self.to.as_deref()
    }

    /// `condition`, if set.
    pub fn get_condition(&self) -> Option<&str> {
        self.condition.as_deref()
    }

    /// `collapse_key`, if set.
    pub fn get_collapse_key(&self) -> Option<&str> {
        self.collapse_key.as_deref()
    }

    /// `priority`, if set.
    pub fn get_priority(&self) -> Option<Priority> {
        self.priority
    }

    /// `content_available`, if set.
    pub fn get_content_available(&self) -> Option<bool> {
        self.content_available
    }

    /// `mutable_content`, if set.
    pub fn get_mutable_content(&self) -> Option<bool> {
        self.mutable_content
    }

    /// `time_to_live` in seconds, if set (`Some(0)` is a real value).
    pub fn get_time_to_live(&self) -> Option<u32> {
        self.time_to_live
    }

    /// `delay_while_idle`, if set.
    pub fn get_delay_while_idle(&self) -> Option<bool> {
        self.delay_while_idle
    }

    /// `delivery_receipt_requested`, if set.
    pub fn get_delivery_receipt_requested(&self) -> Option<bool> {
        self.delivery_receipt_requested
    }

    /// `dry_run`, if set.
    pub fn get_dry_run(&self) -> Option<bool> {
        self.dry_run
    }

    /// The `data` pairs in insertion order (key order for parsed messages).
    pub fn data_pairs(&self) -> &[(String, String)] {
        &self.data
    }

    /// The value of `data` key `key`, if set.
    pub fn data_value(&self, key: &str) -> Option<&str> {
        self.data
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The `notification` object, if set.
    pub fn get_notification(&self) -> Option<&Notification> {
        self.notification.as_ref()
    }

    /// The ordered group key set with [`Message::group`] (never empty).
    pub fn get_group(&self) -> Option<&str> {
        self.group.as_deref()
    }

    // ---- validation ----------------------------------------------------

    /// Checks the message as CCS would
    /// ([protocol: downstream messages](crate::protocol#downstream-messages)).
    ///
    /// # Errors
    ///
    /// [`InvalidMessage`] naming the field:
    /// - `to`: neither or both of `to` / `condition`, an empty `to`, or a
    ///   `/topics/` name outside `[a-zA-Z0-9-_.~%]+`;
    /// - `condition`: empty, or more than two `&&` / `||` operators;
    /// - any field (`to`, `condition`, `message_id`, `collapse_key`, `data`,
    ///   `notification.*`): a character XML 1.0 forbids (a C0 control other than
    ///   tab, LF and CR, or U+FFFE / U+FFFF), which no stanza can carry;
    /// - `message_id`: empty, or starting with `fx-ack-` (reserved for the stanza
    ///   ids of acks, so that an error about an ack never looks like one about a
    ///   downstream message);
    /// - `time_to_live`: above 2419200;
    /// - `data`: an empty or reserved key (`from`, `message_type`, `google*`,
    ///   `gcm*`), or keys plus values above 4096 bytes;
    /// - `group`: a key above [`MAX_GROUP_BYTES`] bytes.
    pub fn validate(&self) -> Result<(), InvalidMessage> {
        self.validate_chars()?;
        match (&self.to, &self.condition) {
            (Some(_), Some(_)) => {
                return Err(InvalidMessage::new(
                    "to",
                    "set either `to` or `condition`, not both",
                ))
            }
            (None, None) => {
                return Err(InvalidMessage::new(
                    "to",
                    "missing recipient: set `to` or `condition`",
                ))
            }
            (Some(to), None) => validate_to(to)?,
            (None, Some(cond)) => validate_condition(cond)?,
        }
        if self.message_id.is_empty() {
            return Err(InvalidMessage::new("message_id", "must not be empty"));
        }
        if self.message_id.starts_with(ACK_STANZA_ID_PREFIX) {
            return Err(InvalidMessage::new(
                "message_id",
                format!(
                    "ids starting with {ACK_STANZA_ID_PREFIX:?} are reserved for the stanzas \
                     of this client's acks"
                ),
            ));
        }
        if let Some(ttl) = self.time_to_live {
            if ttl > MAX_TIME_TO_LIVE {
                return Err(InvalidMessage::new(
                    "time_to_live",
                    format!("{ttl} is above the maximum of {MAX_TIME_TO_LIVE} seconds (4 weeks)"),
                ));
            }
        }
        if self
            .group
            .as_ref()
            .is_some_and(|g| g.len() > MAX_GROUP_BYTES)
        {
            return Err(InvalidMessage::new(
                "group",
                format!("longer than {MAX_GROUP_BYTES} bytes"),
            ));
        }
        validate_data(&self.data)
    }

    // ---- JSON ----------------------------------------------------------

    /// Appends the JSON object for this message to `out`.
    ///
    /// Numbers are JSON numbers, flags JSON booleans, unset optional fields
    /// are left out, `time_to_live: 0` is written. Allocates nothing beyond
    /// the growth of `out`. Does not validate: call [`Message::validate`].
    pub fn write_json(&self, out: &mut String) {
        out.push('{');
        let mut first = true;
        let opt_str = |name: &str, v: &Option<String>, first: &mut bool, out: &mut String| {
            if let Some(v) = v {
                json::write_key(name, first, out);
                json::write_str(v, out);
            }
        };
        let opt_bool = |name: &str, v: Option<bool>, first: &mut bool, out: &mut String| {
            if let Some(v) = v {
                json::write_key(name, first, out);
                out.push_str(if v { "true" } else { "false" });
            }
        };
        opt_str("to", &self.to, &mut first, out);
        opt_str("condition", &self.condition, &mut first, out);
        json::write_key("message_id", &mut first, out);
        json::write_str(&self.message_id, out);
        opt_str("collapse_key", &self.collapse_key, &mut first, out);
        if let Some(p) = self.priority {
            json::write_key("priority", &mut first, out);
            json::write_str(p.as_str(), out);
        }
        opt_bool("content_available", self.content_available, &mut first, out);
        opt_bool("mutable_content", self.mutable_content, &mut first, out);
        if let Some(ttl) = self.time_to_live {
            json::write_key("time_to_live", &mut first, out);
            json::write_u64(u64::from(ttl), out);
        }
        opt_bool("delay_while_idle", self.delay_while_idle, &mut first, out);
        opt_bool(
            "delivery_receipt_requested",
            self.delivery_receipt_requested,
            &mut first,
            out,
        );
        opt_bool("dry_run", self.dry_run, &mut first, out);
        if !self.data.is_empty() {
            json::write_key("data", &mut first, out);
            out.push('{');
            let mut first_pair = true;
            for (k, v) in &self.data {
                json::write_key(k, &mut first_pair, out);
                json::write_str(v, out);
            }
            out.push('}');
        }
        if let Some(n) = &self.notification {
            json::write_key("notification", &mut first, out);
            n.write_json(out);
        }
        out.push('}');
    }

    /// The JSON object for this message as a new string.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(128);
        self.write_json(&mut out);
        out
    }

    /// Parses a downstream JSON object strictly, as CCS would, and validates it.
    ///
    /// # Errors
    ///
    /// [`InvalidMessage`] naming the field:
    /// - `json`: not valid JSON or not an object;
    /// - `message_id` with reason exactly `missing` when absent (CCS answers
    ///   that with a stanza error 400, not a NACK);
    /// - any field with the wrong JSON type (`"time_to_live":"600"`,
    ///   `"delay_while_idle":"true"`), a non-string `data` value (`data`), an
    ///   unknown `priority`, and everything [`Message::validate`] refuses.
    pub fn from_json(text: &str) -> Result<Message, InvalidMessage> {
        if let Some(m) = fast::from_json(text) {
            return Ok(m);
        }
        let obj =
            json::parse_object(text).map_err(|e| InvalidMessage::new("json", e.to_string()))?;
        Message::from_json_value(&obj)
    }

    /// Like [`Message::from_json`] on an already parsed object, so a caller can
    /// look at `message_type` first without parsing twice. `message_type` and
    /// other unknown top-level fields are ignored here.
    ///
    /// # Errors
    ///
    /// As [`Message::from_json`], minus the `json` case.
    pub fn from_json_value(obj: &Object) -> Result<Message, InvalidMessage> {
        let msg = parse_fields(obj).map_err(|e| InvalidMessage::new(e.field, e.reason))?;
        msg.validate()?;
        Ok(msg)
    }
}

fn parse_fields(obj: &Object) -> Result<Message, FieldError> {
    let s = |field: &'static str| json::opt_str(obj, field).map(|v| v.map(str::to_owned));
    let message_id = json::req_str(obj, "message_id")?.to_owned();
    let priority = match json::opt_str(obj, "priority")? {
        None => None,
        Some(p) => Some(
            Priority::from_name(p)
                .ok_or_else(|| FieldError::new("priority", "must be \"normal\" or \"high\""))?,
        ),
    };
    let time_to_live = json::opt_u64(obj, "time_to_live", u64::from(MAX_TIME_TO_LIVE))?
        .map(|v| u32::try_from(v).unwrap_or(u32::MAX));
    let mut data = Vec::new();
    if let Some(d) = json::opt_object(obj, "data")? {
        data.reserve(d.len());
        for (k, v) in d.iter() {
            match v {
                Value::String(v) => data.push((k.clone(), v.clone())),
                other => {
                    return Err(FieldError::new(
                        "data",
                        format!(
                            "value of key {k:?} must be a string, got {}",
                            json::kind(other)
                        ),
                    ))
                }
            }
        }
    }
    let notification = match json::opt_object(obj, "notification")? {
        None => None,
        Some(n) => Some(Notification::from_object(n)?),
    };
    Ok(Message {
        to: s("to")?,
        condition: s("condition")?,
        message_id,
        collapse_key: s("collapse_key")?,
        priority,
        content_available: json::opt_bool(obj, "content_available")?,
        mutable_content: json::opt_bool(obj, "mutable_content")?,
        time_to_live,
        delay_while_idle: json::opt_bool(obj, "delay_while_idle")?,
        delivery_receipt_requested: json::opt_bool(obj, "delivery_receipt_requested")?,
        dry_run: json::opt_bool(obj, "dry_run")?,
        data,
        notification,
        group: None,
    })
}

fn validate_to(to: &str) -> Result<(), InvalidMessage> {
    if to.is_empty() {
        return Err(InvalidMessage::new("to", "must not be empty"));
    }
    if let Some(name) = to.strip_prefix(TOPIC_PREFIX) {
        if name.is_empty() {
            return Err(InvalidMessage::new("to", "empty topic name after /topics/"));
        }
        if let Some(bad) = name.chars().find(|&c| !is_topic_char(c)) {
            return Err(InvalidMessage::new(
                "to",
                format!("topic name contains {bad:?}; allowed: [a-zA-Z0-9-_.~%]"),
            ));
        }
    }
    Ok(())
}

fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '%')
}

fn validate_condition(cond: &str) -> Result<(), InvalidMessage> {
    if cond.trim().is_empty() {
        return Err(InvalidMessage::new("condition", "must not be empty"));
    }
    let ops = cond.matches("&&").count() + cond.matches("||").count();
    if ops > MAX_CONDITION_OPERATORS {
        return Err(InvalidMessage::new(
            "condition",
            format!("{ops} operators; at most {MAX_CONDITION_OPERATORS} `&&` / `||` allowed"),
        ));
    }
    Ok(())
}

/// Stanza ids of the acks this client writes start with this; downstream message ids
/// (which are their stanzas' ids) may not, so the two never collide.
pub(crate) const ACK_STANZA_ID_PREFIX: &str = "fx-ack-";

/// Refuses a value holding a character XML 1.0 forbids.
fn check_chars(field: &'static str, value: &str) -> Result<(), InvalidMessage> {
    match first_forbidden_char(value) {
        None => Ok(()),
        Some(c) => Err(InvalidMessage::new(
            field,
            format!(
                "holds U+{:04X}, a character XML 1.0 forbids (no stanza can carry it)",
                u32::from(c)
            ),
        )),
    }
}

impl Message {
    /// Every string field through [`check_chars`].
    fn validate_chars(&self) -> Result<(), InvalidMessage> {
        let opt =
            |field, v: &Option<String>| v.as_deref().map_or(Ok(()), |v| check_chars(field, v));
        opt("to", &self.to)?;
        opt("condition", &self.condition)?;
        check_chars("message_id", &self.message_id)?;
        opt("collapse_key", &self.collapse_key)?;
        for (k, v) in &self.data {
            check_chars("data", k)?;
            check_chars("data", v)?;
        }
        let Some(n) = &self.notification else {
            return Ok(());
        };
        opt("notification.title", &n.title)?;
        opt("notification.body", &n.body)?;
        opt("notification.android_channel_id", &n.android_channel_id)?;
        opt("notification.icon", &n.icon)?;
        opt("notification.sound", &n.sound)?;
        opt("notification.tag", &n.tag)?;
        opt("notification.color", &n.color)?;
        opt("notification.click_action", &n.click_action)?;
        opt("notification.badge", &n.badge)?;
        opt("notification.subtitle", &n.subtitle)?;
        opt("notification.body_loc_key", &n.body_loc_key)?;
        opt("notification.title_loc_key", &n.title_loc_key)?;
        for arg in n.body_loc_args.iter().flatten() {
            check_chars("notification.body_loc_args", arg)?;
        }
        for arg in n.title_loc_args.iter().flatten() {
            check_chars("notification.title_loc_args", arg)?;
        }
        Ok(())
    }
}

/// True for `data` keys CCS reserves (answers INVALID_JSON for).
fn is_reserved_data_key(key: &str) -> bool {
    key == "from" || key == "message_type" || key.starts_with("google") || key.starts_with("gcm")
}

fn validate_data(data: &[(String, String)]) -> Result<(), InvalidMessage> {
    let mut total = 0usize;
    for (k, v) in data {
        if k.is_empty() {
            return Err(InvalidMessage::new("data", "empty key"));
        }
        if is_reserved_data_key(k) {
            return Err(InvalidMessage::new(
                "data",
                format!("key {k:?} is reserved (from, message_type, google*, gcm*)"),
            ));
        }
        total = total.saturating_add(k.len()).saturating_add(v.len());
    }
    if total > MAX_DATA_BYTES {
        return Err(InvalidMessage::new(
            "data",
            format!("keys and values total {total} bytes; at most {MAX_DATA_BYTES} allowed"),
        ));
    }
    Ok(())
}

pub(crate) mod fast;
#[cfg(test)]
mod tests;
