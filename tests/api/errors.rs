//! The one JSON error shape, for Keel's errors and actix's own.

use keel_testkit::{assert_error, spawn_app};

#[actix_web::test]
async fn an_unknown_route_answers_404_in_the_error_shape() {
    let app = spawn_app().await;
    let error = assert_error(app.get("/nope").await, 404, "NOT_FOUND").await;
    assert_eq!(error["path"], "/nope");
    let error = assert_error(app.get("/api/v1/nope").await, 404, "NOT_FOUND").await;
    assert_eq!(error["path"], "/api/v1/nope");
}

#[actix_web::test]
async fn a_wrong_method_answers_405_in_the_error_shape() {
    let app = spawn_app().await;
    let res = app.post_raw("/health/live", "application/json", b"{}".to_vec()).await;
    assert_eq!(res.headers()["allow"], "GET");
    assert_error(res, 405, "METHOD_NOT_ALLOWED").await;
}

#[actix_web::test]
async fn a_sane_request_id_is_echoed_and_an_unsafe_one_is_replaced() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(format!("{}/nope", app.address))
        .header("x-request-id", "trace-42.abc")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "trace-42.abc");
    let error = assert_error(res, 404, "NOT_FOUND").await;
    assert_eq!(error["request_id"], "trace-42.abc");

    for unsafe_id in ["has spaces", "semi;colon", &"x".repeat(65)] {
        let res = app
            .client
            .get(format!("{}/health/live", app.address))
            .header("x-request-id", unsafe_id)
            .send()
            .await
            .unwrap();
        let echoed = res.headers()["x-request-id"].to_str().unwrap();
        assert_ne!(echoed, unsafe_id);
        assert_eq!(echoed.len(), 36, "a generated UUID");
    }
}
