//! Extractors: the caller, role requirements declared in a handler's
//! signature, and the path and query string with their errors in the API's
//! one error shape.
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
use serde::de::DeserializeOwned;

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

/// axum's `Query`, with a query string that does not fit `T` (a missing,
/// repeated or mistyped parameter) answered as 400 `invalid_query` in the
/// JSON error shape rather than axum's plain-text rejection.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(ApiError::BadRequest {
                code: "invalid_query",
                message: rejection.body_text(),
                path: None,
            }),
        }
    }
}

/// axum's `Path`, with a path segment that does not decode (e.g. bytes
/// that are not UTF-8) answered as 400 `invalid_path` in the JSON error
/// shape.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(ApiError::BadRequest {
                code: "invalid_path",
                message: rejection.body_text(),
                path: None,
            }),
        }
    }
}
