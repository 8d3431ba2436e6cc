//! The service both the lean loop and hyper call: the router, behind RFC 9112 3.2's
//! rule that an HTTP/1.1 request carries exactly one `Host`, a host and port, and the
//! direct routes ([`Direct`]) that answer their requests before the router.
//!
//! Checked here rather than in a router layer: a layer boxes every request's future
//! again and keeps a clone of the routes in it, which cost every held long poll
//! 1.4 KiB; this check adds an enum tag to the router's future.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::http::{Method, Request, Uri, Version, header};
use axum::response::{IntoResponse, Response};
use futures_util::future::{Either, Ready, ready};
use futures_util::future::{FutureExt, Map};
use hyper::service::Service as HyperService;
use hyper_util::service::TowerToHyperService;

use crate::error::ApiError;

/// The answer of a direct route.
pub type DirectAnswer = Pin<Box<dyn Future<Output = Response> + Send>>;

/// A route answered without the router, for the request that is most of a load: the
/// router's way to a handler (matching, path parameters, the layers and boxes around
/// the handler's future) was about 8% of the server's CPU under long polls at 1,000
/// users x 50 msg/s. It takes a request by its method and URI alone, or leaves it
/// (`None`) to the router, which serves every other request and every other method on
/// the same path.
pub type Direct = Box<dyn Fn(&Method, &Uri) -> Option<DirectAnswer> + Send + Sync>;

/// The router and the direct routes, as hyper and the lean loop both call them.
#[derive(Clone)]
pub struct Service {
    router: TowerToHyperService<Router>,
    direct: Arc<[Direct]>,
}

impl Service {
    pub fn new(router: Router, direct: Vec<Direct>) -> Self {
        Service {
            router: TowerToHyperService::new(router),
            direct: direct.into(),
        }
    }
}

type Answered = Map<DirectAnswer, fn(Response) -> Result<Response, Infallible>>;

impl<B> HyperService<Request<B>> for Service
where
    TowerToHyperService<Router>: HyperService<Request<B>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<
        Either<Ready<Result<Response, Infallible>>, Answered>,
        <TowerToHyperService<Router> as HyperService<Request<B>>>::Future,
    >;

    fn call(&self, request: Request<B>) -> Self::Future {
        if request.version() == Version::HTTP_11 && !one_valid_host(&request) {
            let refused =
                ApiError::bad_request("an HTTP/1.1 request needs one Host header: a host and port");
            return Either::Left(Either::Left(ready(Ok(refused.into_response()))));
        }
        for route in self.direct.iter() {
            if let Some(answer) = route(request.method(), request.uri()) {
                return Either::Left(Either::Right(answer.map(Ok)));
            }
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
