//! Files: streamed up and down byte for byte, limits that leave nothing behind, hostile
//! names, owner rules.

use reqwest::StatusCode;
use sha2::{Digest, Sha256};

use super::{UPLOAD_LIMIT, cluster, node, on_users_shard, user};
use strata_tests::api::{consistency_token, status_and_json};

/// Bytes that are not all alike, so a corrupted chunk would show.
fn payload(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Files the object store holds for a user.
fn stored_objects(user_id: &str) -> usize {
    let dir = cluster()
        .spec
        .data_dir
        .join("objects")
        .join("files")
        .join(user_id);
    std::fs::read_dir(dir)
        .map(|entries| entries.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn an_upload_downloads_byte_identical_with_its_sha256_and_etag() {
    let owner = user("archivist").await;
    let bytes = payload(3 * 1024 * 1024 + 17);
    let api = node(0);
    let response = api
        .upload(
            &owner.access,
            "report%20%C3%A9.bin",
            Some("application/octet-stream"),
            bytes.clone(),
        )
        .await;
    // Read on the other node with the write's consistency token (read-your-writes).
    let written = consistency_token(&response);
    let (status, file) = status_and_json(response).await;
    assert_eq!(status, StatusCode::CREATED, "{file}");
    let sha = hex::encode(Sha256::digest(&bytes));
    assert_eq!(file["sha256"], sha);
    assert_eq!(file["size"], bytes.len() as u64);
    assert_eq!(file["name"], "report é.bin");

    let id = file["id"].as_str().unwrap();
    let other = node(1);
    let download = other
        .get_after(&format!("/v1/files/{id}/content"), &owner.access, &written)
        .await;
    assert_eq!(download.status(), StatusCode::OK);
    let etag = download.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{sha}\""));
    assert_eq!(
        download.headers()["content-length"],
        bytes.len().to_string().as_str()
    );
    assert_eq!(
        download.headers()["content-type"],
        "application/octet-stream"
    );
    assert_eq!(
        download.bytes().await.unwrap().as_ref(),
        bytes.as_slice(),
        "byte-identical"
    );

    let again = other
        .http
        .get(format!("{}/v1/files/{id}/content", other.base))
        .bearer_auth(&owner.access)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    let (_, list) =
        status_and_json(other.get_after("/v1/files", &owner.access, &written).await).await;
    assert_eq!(list["items"][0]["id"], id);

    let stranger = user("snoop").await;
    for path in [format!("/v1/files/{id}"), format!("/v1/files/{id}/content")] {
        assert_eq!(
            other.get(&path, Some(&stranger.access)).await.status(),
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    let gone = api
        .http
        .delete(format!("{}/v1/files/{id}", api.base))
        .bearer_auth(&owner.access)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        stored_objects(&owner.user_id),
        0,
        "deleting a file removes its bytes"
    );
}

#[tokio::test]
async fn an_upload_over_the_limit_gets_413_and_leaves_nothing_behind() {
    let owner = user("hoarder").await;
    let api = node(0);
    // Declared too large: refused from the headers alone, before any byte is read. (Sent
    // by hand: an HTTP client still writing the body when the early 413 arrives may
    // report the closed connection instead of the answer.)
    let addr = api.base.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/files?name=big.bin HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        owner.access,
        UPLOAD_LIMIT + 1
    );
    tokio::io::AsyncWriteExt::write_all(&mut socket, head.as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut socket, &mut answer)
        .await
        .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "refused from its Content-Length: {}",
        answer.lines().next().unwrap_or("")
    );

    let too_big = payload(UPLOAD_LIMIT as usize + 1);
    // Streamed without a length: refused once the stream passes the limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        too_big.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let streamed = api
        .http
        .post(format!("{}/v1/files?name=big-stream.bin", api.base))
        .bearer_auth(&owner.access)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        streamed.status(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "refused while streaming"
    );

    let rows = on_users_shard(
        &owner.user_id,
        &format!(
            "SELECT count(*) FROM files WHERE owner_id = '{}'",
            owner.user_id
        ),
    );
    assert_eq!(rows, "0", "no metadata");
    assert_eq!(stored_objects(&owner.user_id), 0, "no bytes");
}

#[tokio::test]
async fn hostile_file_names_are_refused_safely() {
    let owner = user("trickster").await;
    let api = node(0);
    let long = "n".repeat(10_000);
    for name in [
        "..%2F..%2Fetc%2Fpasswd",
        "nul%00byte",
        long.as_str(),
        "",
        "a%0Ab",
    ] {
        let response = api.upload(&owner.access, name, None, "x").await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name {:?}",
            &name[..name.len().min(30)]
        );
    }
    let no_name = api
        .http
        .post(format!("{}/v1/files", api.base))
        .bearer_auth(&owner.access)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(no_name.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let bad_type = api
        .http
        .post(format!("{}/v1/files?name=a.txt", api.base))
        .bearer_auth(&owner.access)
        .header("content-type", "not a type")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_type.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(stored_objects(&owner.user_id), 0);
}

#[tokio::test]
async fn bytes_whose_metadata_write_fails_are_removed() {
    let owner = user("unlucky").await;
    // A fault injected on every shard: metadata for a file named 'metadata fails.bin'
    // cannot be written, after its bytes are already in the object store.
    for shard in &cluster().spec.shard_map.shards {
        cluster()
            .pg(&shard.id, 0)
            .psql(
                "strata",
                "CREATE OR REPLACE FUNCTION fail_marked_files() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN IF NEW.name = 'metadata fails.bin' THEN RAISE EXCEPTION 'injected fault'; END IF; \
                 RETURN NEW; END $$; \
                 CREATE OR REPLACE TRIGGER fail_marked_files BEFORE INSERT ON files \
                 FOR EACH ROW EXECUTE FUNCTION fail_marked_files()",
            )
            .unwrap();
    }
    let api = node(1);
    let response = api
        .http
        .post(format!("{}/v1/files?name=metadata%20fails.bin", api.base))
        .bearer_auth(&owner.access)
        .body(payload(200_000))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_server_error(),
        "the injected fault fails the upload: {}",
        response.status()
    );
    assert_eq!(
        stored_objects(&owner.user_id),
        0,
        "the uploaded bytes were removed"
    );
}

#[tokio::test]
async fn a_multipart_upload_of_the_file_field_is_stored_like_a_raw_one() {
    let owner = user("former").await;
    let bytes = payload(300_000);
    let boundary = "strata-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nignored\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"notes.bin\"\r\n\
         Content-Type: application/x-notes\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let api = node(0);
    let response = api
        .http
        .post(format!("{}/v1/files", api.base))
        .bearer_auth(&owner.access)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    // The read carries the write's consistency token: without it a replica that has
    // not replayed the upload yet answers 404, as the API allows.
    let written = consistency_token(&response);
    let (status, file) = status_and_json(response).await;
    assert_eq!(status, StatusCode::CREATED, "{file}");
    assert_eq!(
        file["name"], "notes.bin",
        "the name comes from the part's filename"
    );
    assert_eq!(file["content_type"], "application/x-notes");
    assert_eq!(file["sha256"], hex::encode(Sha256::digest(&bytes)));
    let content = api
        .get_after(
            &format!("/v1/files/{}/content", file["id"].as_str().unwrap()),
            &owner.access,
            &written,
        )
        .await;
    assert_eq!(content.bytes().await.unwrap().as_ref(), bytes.as_slice());

    let no_file = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nx\r\n--{boundary}--\r\n"
    );
    let response = api
        .http
        .post(format!("{}/v1/files?name=x.txt", api.base))
        .bearer_auth(&owner.access)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(no_file)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "a form without a file field"
    );
}

/// Metadata still readable while the bytes are already gone (a replica that has not
/// replayed a delete yet, simulated by removing the stored object): the download is a
/// 404 problem, not a 503 that clients would retry for ever.
#[tokio::test]
async fn a_file_whose_bytes_are_gone_downloads_as_404() {
    let owner = user("vanisher").await;
    let api = node(0);
    let uploaded = api
        .upload(
            &owner.access,
            "gone.txt",
            Some("text/plain"),
            b"soon gone".to_vec(),
        )
        .await;
    let written = consistency_token(&uploaded);
    let (status, file) = status_and_json(uploaded).await;
    assert_eq!(status, StatusCode::CREATED, "{file}");
    let id = file["id"].as_str().unwrap();
    let key = on_users_shard(
        &owner.user_id,
        &format!("SELECT object_key FROM files WHERE id = '{id}'"),
    );
    std::fs::remove_file(cluster().spec.data_dir.join("objects").join(&key)).unwrap();
    // With the upload's token, so the 404 is for the missing bytes, not for a replica
    // that has not replayed the upload yet.
    let response = api
        .get_after(&format!("/v1/files/{id}/content"), &owner.access, &written)
        .await;
    let status = response.status();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "{}",
        response.text().await.unwrap()
    );
    assert_eq!(content_type, "application/problem+json");
}

/// A multipart body with the `file` part holding `bytes`.
fn multipart_body(boundary: &str, bytes: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

/// Multipart uploads are limited by `max_upload_bytes` like raw ones, not by the JSON
/// body limit (1 MiB): 2 MiB is stored, past the limit is a 413.
#[tokio::test]
async fn multipart_uploads_are_limited_by_the_upload_limit_not_the_json_one() {
    let owner = user("bigform").await;
    let api = node(0);
    let boundary = "strata-big-boundary";
    for (len, expected) in [
        (2 * 1024 * 1024, StatusCode::CREATED),
        (UPLOAD_LIMIT as usize + 1, StatusCode::PAYLOAD_TOO_LARGE),
    ] {
        let bytes = payload(len);
        let response = api
            .http
            .post(format!("{}/v1/files", api.base))
            .bearer_auth(&owner.access)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(multipart_body(boundary, &bytes))
            .send()
            .await
            .unwrap();
        let (status, file) = status_and_json(response).await;
        assert_eq!(status, expected, "{len} bytes: {file}");
        if status == StatusCode::CREATED {
            assert_eq!(file["size"], len as u64);
            assert_eq!(file["sha256"], hex::encode(Sha256::digest(&bytes)));
        }
    }
}
