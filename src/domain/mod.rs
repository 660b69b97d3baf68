//! Domain types: ids, messages, channels, pages and cursors. Values here are validated
//! when they are made (`parse`), so the rest of the code only ever sees valid ones.
//! No I/O lives here.

pub mod feed;
pub mod history;
mod input;
mod model;
mod paging;
mod scope;
mod wal;
pub mod window;

pub use input::{
    ChannelName, ChannelType, ClientMsgId, Content, InvalidInput, Role, SyncRequest,
    DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, MAX_SYNC_CHANNELS,
};
pub use model::{
    Channel, ChannelId, Member, MemberSummary, Message, MessageId, Page, SyncChannel, SyncResult,
    UnreadChannel, UserId,
};
pub use paging::{Cursor, PageCursor, PageId, PageRequest, Paging};
pub use scope::Scope;
pub use wal::Lsn;
