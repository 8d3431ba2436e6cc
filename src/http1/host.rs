//! The service both the lean loop and hyper call: the router, behind RFC 9112 3.2's
//! rule that an HTTP/1.1 request carries exactly one `Host`, a host and port.
//!
//! Checked here rather than in a router layer: a layer boxes every request's future
//! again and keeps a clone of the routes in it, which cost every held long poll
//! 1.4 KiB; this check adds an enum tag to the router's future.

use std::convert::Infallible;

use axum::Router;
use axum::http::{Request, Version, header};
use axum::response::{IntoResponse, Response};
use futures_util::future::{Either, Ready, ready};
use hyper::service::Service as HyperService;
use hyper_util::service::TowerToHyperService;

use crate::error::ApiError;

/// The router as hyper and the lean loop both call it.
#[derive(Clone)]
pub struct Service {
    router: TowerToHyperService<Router>,
}

impl Service {
    pub fn new(router: Router) -> Self {
        Service {
            router: TowerToHyperService::new(router),
        }
    }
}

impl<B> HyperService<Request<B>> for Service
where
    TowerToHyperService<Router>: HyperService<Request<B>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<
        Ready<Result<Response, Infallible>>,
        <TowerToHyperService<Router> as HyperService<Request<B>>>::Future,
    >;

    fn call(&self, request: Request<B>) -> Self::Future {
        if request.version() == Version::HTTP_11 && !one_valid_host(&request) {
            let refused =
                ApiError::bad_request("an HTTP/1.1 request needs one Host header: a host and port");
            return Either::Left(ready(Ok(refused.into_response())));
        }
        Either::Right(self.router.call(request))
    }
}

/// Exactly one `Host`, made of the characters a host (a name, an IP address or an IP
/// literal in brackets) and a port can have; empty is allowed (RFC 9112 3.2).
fn one_valid_host<B>(request: &Request<B>) -> bool {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(host), None) => host
            .as_bytes()
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%:[]".contains(&b)),
        _ => false,
    }
}
