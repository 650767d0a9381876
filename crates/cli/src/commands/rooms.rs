//! `muster rooms`, `muster join`, `muster leave`.

use clap::Args;
use muster_core::api::{RoomRequest, RoomView, Rooms};
use muster_core::protocol::RoomKind;

use crate::client::{decode, ClientError};
use crate::context::Context;
use crate::output::{self, clean, truncate, Table};

#[derive(Debug, Args)]
pub struct RoomArgs {
    /// Room name
    pub room: String,
    /// Act as this session (id, nickname or prefix) or op:<name> [default: $MUSTER_SESSION_ID,
    /// else $CLAUDE_CODE_SESSION_ID, else op:<operator>]
    #[arg(long = "as", value_name = "SESSION")]
    pub as_: Option<String>,
}

pub async fn run_list(ctx: &Context) -> Result<i32, ClientError> {
    let value = ctx.client()?.get("/api/v1/rooms", &[]).await?;
    if ctx.json {
        output::print_json(&value);
        return Ok(0);
    }
    let rooms: Rooms = decode(value, "rooms")?;
    output::emit(&render_rooms(&rooms.rooms));
    Ok(0)
}

/// `join` when `joining`, else `leave`.
pub async fn run_join(ctx: &Context, args: &RoomArgs, joining: bool) -> Result<i32, ClientError> {
    let room = args
        .room
        .strip_prefix('#')
        .unwrap_or(&args.room)
        .to_string();
    let request = RoomRequest {
        as_: Some(ctx.acting_as(args.as_.as_deref())),
        room,
    };
    let path = if joining {
        "/api/v1/rooms/join"
    } else {
        "/api/v1/rooms/leave"
    };
    let value = ctx.client()?.post(path, &request).await?;
    if ctx.json {
        output::print_json(&value);
        return Ok(0);
    }
    let view: RoomView = decode(value, "room")?;
    let verb = if joining { "joined" } else { "left" };
    output::emit_line(&format!(
        "{verb} #{} ({})",
        clean(&view.name, false),
        members_summary(&view)
    ));
    Ok(0)
}

/// `3 members: calm-heron, old-owl (away), op:alice`.
pub fn members_summary(view: &RoomView) -> String {
    let n = view.members.len();
    if n == 0 {
        return "no members".to_string();
    }
    let names: Vec<String> = view
        .members
        .iter()
        .map(|m| {
            let name = clean(&m.nickname, false);
            if m.present {
                name
            } else {
                format!("{name} (away)")
            }
        })
        .collect();
    truncate(
        &format!(
            "{n} member{}: {}",
            if n == 1 { "" } else { "s" },
            names.join(", ")
        ),
        100,
    )
}

pub fn render_rooms(rooms: &[RoomView]) -> String {
    if rooms.is_empty() {
        return "no rooms yet (muster join <room> creates one)\n".to_string();
    }
    let mut table = Table::new(&["ROOM", "KIND", "MEMBERS"]);
    for room in rooms {
        table.row(vec![
            format!("#{}", clean(&room.name, false)),
            match room.kind {
                RoomKind::Automatic => "automatic",
                RoomKind::Named => "named",
            }
            .to_string(),
            members_summary(room),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_core::api::RoomMember;

    #[test]
    fn rooms_table_lists_members_with_away_marks() {
        // Proves the rooms table shows each room's kind and members, marking away ones.
        let rooms = vec![RoomView {
            name: "frontend".into(),
            kind: RoomKind::Named,
            members: vec![
                RoomMember {
                    id: "a".into(),
                    nickname: "calm-heron".into(),
                    present: true,
                },
                RoomMember {
                    id: "b".into(),
                    nickname: "old-owl".into(),
                    present: false,
                },
            ],
        }];
        assert_eq!(
            render_rooms(&rooms),
            "ROOM       KIND   MEMBERS\n#frontend  named  2 members: calm-heron, old-owl (away)\n"
        );
        assert!(render_rooms(&[]).starts_with("no rooms yet"));
    }
}
