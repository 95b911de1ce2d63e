//! mParticle's server-to-server Events API: the documented contract (limits and allowed
//! values, shared by the forwarder and the stand-in), request bodies and the HTTP client.

pub mod body;
pub mod client;
pub mod merge;
pub mod refusals;
pub mod response;

/// Batches in one `/bulkevents` request.
pub const MAX_BATCHES_PER_BULK: usize = 100;
/// A request body must stay under 256 KB; KB read as 1,000 bytes, the stricter reading.
pub const MAX_REQUEST_BYTES: usize = 256_000;
/// A batch must stay under 128 KB; KB read as 1,000 bytes, the stricter reading.
pub const MAX_BATCH_BYTES: usize = 128_000;
/// Event names and attribute names; mParticle truncates longer ones silently.
pub const MAX_NAME_CHARS: usize = 256;
/// Attribute values; mParticle truncates longer ones silently.
pub const MAX_VALUE_CHARS: usize = 4096;
/// User attributes in one batch.
pub const MAX_USER_ATTRIBUTES: usize = 100;

/// The keys `user_identities` accepts.
pub const IDENTITY_TYPES: &[&str] = &[
    "customer_id",
    "email",
    "mobile_number",
    "other",
    "other_id_2",
    "other_id_3",
    "other_id_4",
    "other_id_5",
    "other_id_6",
    "other_id_7",
    "other_id_8",
    "other_id_9",
    "other_id_10",
    "phone_number_2",
    "phone_number_3",
    "facebook",
    "twitter",
    "google",
    "microsoft",
    "yahoo",
    "alias",
    "facebook_custom_audience_id",
];

/// The values `custom_event_type` accepts.
pub const CUSTOM_EVENT_TYPES: &[&str] = &[
    "navigation",
    "location",
    "search",
    "transaction",
    "user_content",
    "user_preference",
    "social",
    "other",
];

/// The values `product_action.action` accepts.
pub const PRODUCT_ACTIONS: &[&str] = &[
    "add_to_cart",
    "remove_from_cart",
    "checkout",
    "checkout_option",
    "click",
    "view_detail",
    "purchase",
    "refund",
    "add_to_wishlist",
    "remove_from_wish_list",
];

/// Product fields that mParticle takes as numbers; the others are strings.
pub const NUMERIC_PRODUCT_FIELDS: &[&str] = &["price", "quantity", "position"];
/// Product fields a field assignment may fill.
pub const PRODUCT_FIELDS: &[&str] = &[
    "id",
    "name",
    "brand",
    "category",
    "variant",
    "position",
    "price",
    "quantity",
    "coupon_code",
];

/// `environment` in every batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Production,
    Development,
}

impl Environment {
    pub fn from_development_flag(development: bool) -> Self {
        if development {
            Environment::Development
        } else {
            Environment::Production
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Production => "production",
            Environment::Development => "development",
        }
    }
}
