//! Pure rules of the model: what a valid name or e-mail is, and how quotas are counted.
//! Nothing here touches the network; inputs are parsed into these types at the API boundary.

pub mod quota;
pub mod validate;
