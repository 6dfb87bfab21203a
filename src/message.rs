//! Downstream messages: builder, validation (PROTOCOL.md §6) and JSON. STUB: being implemented.

use crate::error::InvalidMessage;

/// Delivery priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    /// `"normal"`.
    Normal,
    /// `"high"`.
    High,
}

/// The `notification` object (display message).
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

/// A downstream message. Built with [`Message::to`] / [`Message::to_topic`] /
/// [`Message::to_condition`] and by-value setters; validated at send.
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
}

impl Message {
    /// A message to a registration token, notification key or `/topics/NAME`.
    pub fn to(_to: impl Into<String>) -> Self {
        todo!()
    }

    /// The message id (generated unique when not set).
    pub fn id(&self) -> &str {
        &self.message_id
    }

    /// Appends the JSON object for this message to `out`.
    pub fn write_json(&self, _out: &mut String) {
        todo!()
    }

    /// Checks the message as CCS would.
    pub fn validate(&self) -> Result<(), InvalidMessage> {
        todo!()
    }
}
