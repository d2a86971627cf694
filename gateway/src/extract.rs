//! Extractors: the caller, and role requirements declared in a handler's
//! signature.
//!
//! ```text
//! async fn list_clients(caller: Require<Admin>) -> … // admins only
//! async fn whoami(caller: Caller) -> …               // any registered client
//! ```
//!
//! The identity was resolved by the edge middleware (see [`crate::app`]);
//! extractors only read it. A handler cannot forget the role check: the
//! role is in its type.

use std::marker::PhantomData;
use std::ops::Deref;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::error::ApiError;
use crate::identity::{Caller, Role};

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or(ApiError::UnknownClient)
    }
}

/// A role a route can require.
pub trait RequiredRole: Send + Sync + 'static {
    const ROLE: Role;
}

/// Role marker: departmental systems.
pub struct System;
/// Role marker: administrators.
pub struct Admin;
/// Role marker: auditors.
pub struct Auditor;

impl RequiredRole for System {
    const ROLE: Role = Role::System;
}
impl RequiredRole for Admin {
    const ROLE: Role = Role::Admin;
}
impl RequiredRole for Auditor {
    const ROLE: Role = Role::Auditor;
}

/// A caller that holds role `R`; any other role gets 403.
pub struct Require<R: RequiredRole> {
    caller: Caller,
    _role: PhantomData<R>,
}

impl<R: RequiredRole> Require<R> {
    /// The caller.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// Takes the caller out.
    pub fn into_caller(self) -> Caller {
        self.caller
    }
}

impl<R: RequiredRole> Deref for Require<R> {
    type Target = Caller;
    fn deref(&self) -> &Caller {
        &self.caller
    }
}

/// The one role check every route uses.
pub fn check_role(caller: &Caller, required: Role) -> Result<(), ApiError> {
    if caller.role == required {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "this route is for clients with role {required}; client {} has role {} \
             (duties are separated: system, admin and auditor clients cannot act for each other)",
            caller.client_id, caller.role
        )))
    }
}

impl<S: Send + Sync, R: RequiredRole> FromRequestParts<S> for Require<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        check_role(&caller, R::ROLE)?;
        Ok(Require {
            caller,
            _role: PhantomData,
        })
    }
}
